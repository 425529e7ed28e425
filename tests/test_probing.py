"""The downstream probe: labels checked, splits stratified and seeded, a detectable label found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlm_adapt import probing
from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig
from mlm_adapt.errors import MlmAdaptError
from conftest import labelled_csv, make_documents, one_word_label_files, run_main


@pytest.mark.parametrize("values, match", [
    (["a", None, "b"] * 5, "5 of 15 rows have no label"),
    (["a"] * 10, "every row has the label 'a'"),
    (["a"] * 10 + ["b"] * 3, r"too few rows for class\(es\) b \(3\)"),
])
def test_labels_that_cannot_be_probed(values, match):
    with pytest.raises(MlmAdaptError, match=match):
        probing.encode_labels(values)


def test_splits_are_stratified_disjoint_and_seeded():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 10)
    train, test = probing.stratified_split(labels, 0.2, seed=1)
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert np.bincount(labels[test]).tolist() == [10, 4, 2]
    again = probing.stratified_split(labels, 0.2, seed=1)
    assert (again[1] == test).all() and (probing.stratified_split(labels, 0.2, seed=2)[1] != test).any()


def test_logistic_regression_separates_what_is_separable_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    features = rng.normal(size=(300, 8))
    separable = features + 3 * np.eye(3, 8)[labels]
    assert np.mean(probing.score(separable, labels, [0, 1, 2], 0.3, "x").accuracy) > 0.95
    assert np.mean(probing.score(features, labels, [0, 1, 2], 0.3, "x").accuracy) < 0.5


def test_a_label_one_word_reveals_is_found_and_a_random_one_is_not(bert_dir, tmp_path):
    detectable, noise = one_word_label_files(tmp_path, 200, doc_seed=5, label_seed=0)
    common = dict(models=(ModelConfig(str(bert_dir)),), seeds=3, max_length=64)
    found = probing.probe(ProbeConfig(data=DataConfig(str(detectable)), **common))["models"][0]
    chance = probing.probe(ProbeConfig(data=DataConfig(str(noise)), **common))["models"][0]
    assert found["accuracy_mean"] > 0.9 and chance["accuracy_mean"] < 0.75
    assert found["accuracy_mean"] - found["accuracy_std"] > chance["accuracy_mean"] + chance["accuracy_std"]
    assert len(found["accuracy"]) == 3 and 0 <= found["macro_f1_mean"] <= 1


def test_two_models_are_compared_on_the_same_splits_from_the_command_line(capsys, bert_dir, distilbert_dir, tmp_path):
    docs = make_documents(60, seed=2)
    data = labelled_csv(tmp_path / "d.csv", docs, ["a" if i % 2 else "b" for i in range(len(docs))])
    code, out, err = run_main(capsys, "probe", "--model", str(bert_dir), "--compare", str(distilbert_dir),
                              "--data", str(data), "--seeds", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [m["model"] for m in report["models"]] == [str(bert_dir), str(distilbert_dir)] and report["seeds"] == [42, 43]
    first, second = report["models"]
    diff = np.array(second["accuracy"]) - np.array(first["accuracy"])
    assert report["comparison"]["accuracy"]["difference_mean"] == pytest.approx(diff.mean())
    code, _, err = run_main(capsys, "probe", "--model", str(bert_dir), "--data", str(data), "--label-column", "stars")
    assert code == 2 and "--label-column 'stars' not found; the data has columns: text, label" in err
    code, _, err = run_main(capsys, "probe", "--model", str(bert_dir), "--data", str(tmp_path / "x.txt"))
    assert code == 2 and "text files hold no labels" in err


def test_embed_runs_on_the_models_device_and_returns_host_arrays(bert_dir, monkeypatch):
    """What a GPU run needs of embed, checked with a stand-in device: the inputs go where
    the encoder's weights are, and the vectors come back as NumPy arrays on the host."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_adapt.probing import embed

    model, tokenizer = AutoModelForMaskedLM.from_pretrained(bert_dir), AutoTokenizer.from_pretrained(bert_dir)
    encoder = model.bert
    seen = []
    original = encoder.forward

    def on_device(input_ids=None, attention_mask=None, **kwargs):
        seen.append((input_ids.device, attention_mask.device))
        return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(encoder, "forward", on_device)
    moved = []
    from transformers import BatchEncoding

    real_to = BatchEncoding.to
    monkeypatch.setattr(BatchEncoding, "to", lambda self, device, **kw: moved.append(torch.device(device)) or real_to(self, device, **kw))
    vectors = embed(model, tokenizer, ["the good film.", "a bad plot.", "the actor."], batch_size=2)
    assert isinstance(vectors, np.ndarray) and vectors.shape == (3, model.config.hidden_size)
    assert moved == [next(encoder.parameters()).device] * 2 and len(seen) == 2
