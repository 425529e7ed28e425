"""The model card, curves and HTML report a run leaves behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import train_config
from mlm_adapt.outputs.reporting import default_probes
from mlm_adapt.training.loop import train


@pytest.fixture(scope="module")
def run(bert_dir, data_root, tmp_path_factory):
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path_factory.mktemp("r") / "out", epochs=2,
                     probes=("the great [MASK] loved the film.",))
    return config, train(config)


def test_model_card_has_hub_front_matter_and_perplexities(run):
    config, metrics = run
    text = (config.output / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "fill-mask"
    assert "mlm-adapt" in front["tags"]
    result = front["model-index"][0]["results"][0]["metrics"][0]
    assert result["type"] == "perplexity" and result["value"] == pytest.approx(metrics["perplexity_after"], rel=1e-3)
    assert f"{metrics['perplexity_before']:.3f}" in text and "the great [MASK] loved the film." in text


def test_curves_png_and_self_contained_report(run):
    config, metrics = run
    png = (config.output / "training_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    page = (config.output / "report.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page
    # No remote resource: the embedded image's base64 can spell "http" by chance (it did, in 1 run of ~300).
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page.split("<body>")[1])
    assert f"{metrics['perplexity_after']:.3f}" in page
    assert "chunk_size: 48" in page  # the resolved configuration
    assert page.count("<tr><td>") >= len(metrics["history"]) + 1  # per-epoch rows and the probe row


def test_default_probes_come_from_held_out_text(bert_dir, data_root, tmp_path):
    from transformers import AutoTokenizer

    from mlm_adapt.config import DataConfig
    from mlm_adapt.data.splits import load_split

    tok = AutoTokenizer.from_pretrained(bert_dir)
    split = load_split(DataConfig(data=str(data_root / "docs.txt"), chunk_size=48, eval_size=30), tok, 1, 128)
    probes = default_probes(split.eval, tok, count=3, seed=1)
    assert len(probes) == 3 and all(p.count("[MASK]") == 1 for p in probes)
    assert probes == default_probes(split.eval, tok, count=3, seed=1)
    for seed in range(60):  # a mask near a chunk's end once read one token past it
        assert all(p.count("[MASK]") == 1 for p in default_probes(split.eval, tok, count=3, seed=seed))


def test_report_renders_in_headless_chromium(run, tmp_path):
    config, _ = run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        # .ci/run installs Chromium: a skip there would hide a report that no longer renders.
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed in CI; .ci/run must install it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium) - the report is not rendered")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,1600", (config.output / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    import numpy as np
    from PIL import Image

    image = Image.open(shot).convert("L")
    colours = len(np.unique(np.asarray(image.resize((300, 400)))))
    assert image.size == (1200, 1600) and colours > 20  # text, tables and the plot, not a blank page
    # The plot itself: text and tables are black and grey, its curves the only blue and red
    # (curves_png's #1f77b4 and #d62728). A missing or broken image has none of either.
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for rgb in ((0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)):
        near = (np.abs(pixels - np.array(rgb)).sum(axis=2) < 60).sum()
        assert near > 150, (rgb, near)


def _task_probe(mode: str, test: str) -> dict:
    model = {"model": "m", "accuracy_mean": 0.8, "accuracy_std": 0.01, "macro_f1_mean": 0.79, "macro_f1_std": 0.01}
    difference = {"difference": 0.01, "interval": [-0.01, 0.03], "significant": False}
    return {"data": "task.csv", "mode": mode, "classes": ["neg", "pos"], "rows": 120, "training_only_rows": 0, "seeds": [42],
            "folds": 3, "baseline": {"accuracy": 0.5, "macro_f1": 0.33}, "models": [model, {**model, "model": "n"}],
            "leakage": {"seen_rows": 0, "unseen_rows": 120, "probed": "unseen", "tested_rows": 120},
            "comparison": {"test": test, "level": 0.95, "accuracy": difference, "macro_f1": difference}}


@pytest.mark.parametrize("mode, test, says, not_says", [
    ("frozen", "group bootstrap", ("Frozen-encoder probe", "resampled by duplicate group", "95% group bootstrap interval"),
     ("Fine-tuned probe", "by test fold")),
    ("fine-tuned", "corrected repeated k-fold t", ("Fine-tuned probe", "paired by test fold", "95% corrected repeated k-fold t"),
     ("Frozen-encoder probe", "duplicate group")),
    ("frozen", "corrected repeated k-fold t", ("Frozen-encoder probe", "paired by test fold"), ("group bootstrap",)),
], ids=["frozen-bootstrap", "finetuned-t", "frozen-t"])
def test_the_card_and_report_describe_the_probe_the_run_made(run, mode, test, says, not_says):
    # The sentence comes from the report's own mode and paired test: change either and the card follows.
    from mlm_adapt.flat_options import to_options
    from mlm_adapt.outputs.model_card import model_card
    from mlm_adapt.outputs.reporting import public_options, report_html

    config, metrics = run
    metrics = {**metrics, "task_probe": _task_probe(mode, test)}
    for page in (model_card(config, metrics, []), report_html(public_options(to_options(config)), metrics, [], b"")):
        for phrase in says:
            assert phrase in page, phrase
        for phrase in not_says:
            assert phrase not in page, phrase
