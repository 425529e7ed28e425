"""The demo's wiring, on tiny local stand-ins for its model and corpora (no downloads)."""

from __future__ import annotations

import dataclasses
import json

from mlm_adapt.config import ModelConfig
from mlm_adapt.demo import PROBES, DemoAssets, run_demo, stage_configs


def test_demo_runs_both_stages_and_writes_the_summary(bert_dir, data_root, tmp_path):
    assets = DemoAssets(bert_dir, data_root / "folder", data_root / "reviews.csv")
    general, adapted = stage_configs(assets, tmp_path / "demo")
    small = dict(batch_size=8, max_steps=3)
    general = dataclasses.replace(general, data=dataclasses.replace(general.data, chunk_size=48, train_size=40, eval_size=10, encoding="utf-8"), **small)
    adapted = dataclasses.replace(adapted, data=dataclasses.replace(adapted.data, chunk_size=48, text_column="review", eval_size=10), **small)
    assert adapted.model == ModelConfig(str(general.output))  # stage 2 starts from stage 1's output

    summary = run_demo(tmp_path / "demo", configs=(general, adapted))

    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["perplexity_before"] == summary["perplexity_before"]
    assert set(saved["fill_mask"]) >= {"before", "after"} and len(saved["fill_mask"]["after"]) == 5
    assert [p["text"] for p in saved["probes"]] == list(PROBES)
    metrics = json.loads((tmp_path / "demo" / "adapted" / "metrics.json").read_text())
    assert metrics["perplexity_after"] == saved["perplexity_after"]
    assert (tmp_path / "demo" / "general" / "model.safetensors").exists()
