"""What a run publishes: no local path in the card, the report or anything pushed, for every
path-valued option (found by value, so an option added later is covered too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import labelled_csv, make_documents, train_config
from mlm_adapt.config import TrainConfig
from mlm_adapt.flat_options import option_names, to_options
from mlm_adapt.system import disclosure


@pytest.mark.parametrize("name", option_names(TrainConfig))
def test_every_option_holding_a_local_path_is_published_by_name(tmp_path, name):
    secret = tmp_path / "private-folder" / f"secret-{name}.txt"
    secret.parent.mkdir()
    secret.write_text("x")
    options = {**to_options(TrainConfig()), name: str(secret)}
    assert str(secret) in disclosure.local_paths(options)
    assert disclosure.public_options(options)[name] == secret.name
    published = disclosure.redact(yaml.safe_dump(options), disclosure.local_paths(options))
    assert str(tmp_path) not in published and secret.name in published


def test_paths_not_yet_made_and_relative_paths_are_local_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs.txt").write_text("x")
    assert disclosure.local_paths({"a": "/nowhere/yet/out", "b": "docs.txt", "c": "~/data.csv"}) == [
        "/nowhere/yet/out", "docs.txt", "~/data.csv"]
    assert disclosure.public_name("/nowhere/yet/out") == "out"
    text = f"{tmp_path / 'docs.txt'} and docs.txt"
    assert disclosure.redact(text, ["docs.txt"]) == "docs.txt and docs.txt"


def test_hub_ids_sentences_and_urls_are_not_paths():
    options = {"model": "distilbert-base-uncased", "data": "imdb", "general_data": "wikitext:wikitext-2-raw-v1",
               "probes": ["This is a great [MASK]."], "url": "hf://datasets/u/d/file.jsonl.gz", "seed": 42}
    assert disclosure.local_paths(options) == []
    assert disclosure.public_options(options) == options


def test_a_run_on_local_files_writes_no_local_path_into_its_card_or_report(bert_dir, data_root, tmp_path, monkeypatch):
    # Every path-valued option at once, absolute: the word list and the task data too.
    import huggingface_hub

    from mlm_adapt.training.loop import train
    from test_hub import USER, FakeApi

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "whoami_result", USER)
    private = tmp_path / "home-of-someone"
    private.mkdir()
    words = private / "words.txt"
    words.write_text("cinematographically\noverwhelmingly\n")
    docs = make_documents(40, seed=3)
    task = labelled_csv(private / "labels.csv", docs, ["pos" if i % 2 else "neg" for i in range(len(docs))])
    out = private / "run"
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=2, add_tokens_file=words,
                       general_data=str(data_root / "reviews.csv"), general_text_column="review",
                       task_data=str(task), push_to_hub="me/adapted"))
    local = (str(tmp_path), str(data_root), str(bert_dir), str(Path.home()) + "/")
    for name in ("README.md", "report.html"):  # on disk: a user may upload the folder by hand
        text = (out / name).read_text(encoding="utf-8")
        assert not [p for p in local if p in text], name
    front = yaml.safe_load((out / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert front["model-index"][0]["results"][0]["dataset"]["name"] == "docs.txt"
    assert "words.txt" in (out / "report.html").read_text(encoding="utf-8")
    for name, content in FakeApi.uploaded.items():  # everything pushed
        text = content.decode("utf-8", errors="ignore")
        assert not [p for p in local if p in text], name
    assert json.loads(FakeApi.uploaded["metrics.json"])["task_probe"]["data"] == "labels.csv"
    # config.yaml and metrics.json on disk keep full paths: they reproduce the run here.
    assert str(words) in (out / "config.yaml").read_text(encoding="utf-8")
