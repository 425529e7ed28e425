"""The downstream probe: labels checked, splits stratified and seeded, a detectable label found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import labelled_csv, make_documents, one_word_label_files, run_main
from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig
from mlm_adapt.data import duplicates
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation import labelled, leakage, probing


@pytest.mark.parametrize("values, match", [
    (["a", None, "b"] * 5, "5 of 15 rows have no label"),
    (["a"] * 10, "every row has the label 'a'"),
    (["a"] * 10 + ["b"] * 3, r"too few rows for class\(es\) b \(3\)"),
])
def test_labels_that_cannot_be_probed(values, match):
    with pytest.raises(MlmAdaptError, match=match):
        labelled.encode_labels(values)


def test_folds_are_stratified_disjoint_and_seeded():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 10)
    groups = np.arange(len(labels))
    splits = probing.fold_splits(labels, groups, 5, seed=1)
    tests = [test for _, test in splits]
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == len(labels)
        assert np.bincount(labels[test]).tolist() == [10, 4, 2]
    assert sorted(np.concatenate(tests).tolist()) == list(range(len(labels)))  # every row tested once
    again = probing.fold_splits(labels, groups, 5, seed=1)
    assert all((a[1] == t).all() for a, t in zip(again, tests))
    assert any((a[1] != t).any() for a, t in zip(probing.fold_splits(labels, groups, 5, seed=2), tests))


def test_logistic_regression_separates_what_is_separable_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    features = rng.normal(size=(300, 8))
    separable = features + 3 * np.eye(3, 8)[labels]
    assert np.mean(probing.score(separable, labels, [0, 1, 2], 5, "x").accuracy) > 0.95
    assert np.mean(probing.score(features, labels, [0, 1, 2], 5, "x").accuracy) < 0.5


def test_a_label_one_word_reveals_is_found_and_a_random_one_is_not(bert_dir, tmp_path):
    detectable, noise = one_word_label_files(tmp_path, 200, doc_seed=5, label_seed=0)
    common = dict(models=(ModelConfig(str(bert_dir)),), seeds=3, max_length=64)
    found = probing.probe(ProbeConfig(data=DataConfig(str(detectable)), **common))["models"][0]
    chance = probing.probe(ProbeConfig(data=DataConfig(str(noise)), **common))["models"][0]
    assert found["accuracy_mean"] > 0.9 and chance["accuracy_mean"] < 0.75
    assert found["accuracy_mean"] - found["accuracy_std"] > chance["accuracy_mean"] + chance["accuracy_std"]
    assert len(found["accuracy"]) == 3 and 0 <= found["macro_f1_mean"] <= 1


def _compared(capsys, first, second, data, *flags) -> dict:
    """``mlm-adapt probe --model FIRST --compare SECOND --data DATA FLAGS --json``'s report."""
    code, out, err = run_main(capsys, "probe", "--model", str(first), "--compare", str(second), "--data", str(data),
                              *flags, "--json")
    assert code == 0, err
    return json.loads(out)


def test_two_models_are_compared_on_the_same_splits_from_the_command_line(capsys, bert_dir, distilbert_dir, tmp_path):
    docs = make_documents(60, seed=2)
    data = labelled_csv(tmp_path / "d.csv", docs, ["a" if i % 2 else "b" for i in range(len(docs))])
    report = _compared(capsys, bert_dir, distilbert_dir, data, "--seeds", "2")
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

    from mlm_adapt.evaluation.embeddings import embed

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


def _scores(name, truth, predicted, folds=5):
    predicted = np.asarray(predicted)
    fold = np.tile(np.arange(len(truth)) % folds, (len(predicted), 1))
    return probing.ProbeScores(name, truth, predicted, ["a", "b"], fold)


def test_the_paired_comparison_calls_a_real_difference_and_not_a_null():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    groups = np.arange(400)

    def noisy(accuracy, seed):
        flip = np.random.default_rng(seed).random((2, 400)) > accuracy
        return np.where(flip, 1 - truth, truth)

    base = _scores("base", truth, noisy(0.75, 1))
    same = _scores("same", truth, noisy(0.75, 2))  # equally good, its own errors
    better = _scores("better", truth, noisy(0.90, 3))
    null = probing.compare(base, same, groups)
    real = probing.compare(base, better, groups)
    assert null["accuracy"]["significant"] is False and null["macro_f1"]["significant"] is False
    low, high = null["accuracy"]["interval"]
    assert low < 0 < high and low < null["accuracy"]["difference"] < high
    assert real["accuracy"]["significant"] is True and real["accuracy"]["interval"][0] > 0.05
    assert real["macro_f1"]["significant"] is True
    # Paired by test fold: the mean of the per-fold differences (equal folds: the pooled difference).
    assert real["accuracy"]["difference"] == pytest.approx(np.mean(better.predicted == truth) - np.mean(base.predicted == truth))


def test_no_verdict_from_too_few_groups():
    truth = np.array([0, 1] * 20)
    groups = np.repeat(np.arange(10), 4)  # 40 rows, but 10 groups of duplicates
    first, second = _scores("a", truth, [truth, truth]), _scores("b", truth, [1 - truth, truth])
    report = probing.compare(first, second, groups)
    assert report["accuracy"]["significant"] is None and report["accuracy"]["difference"] == -0.5


def test_duplicates_up_to_case_and_spaces_never_span_train_and_test():
    texts = [f"Review {i % 30}:  a  film." if i % 3 else f"review {i % 30}: a film." for i in range(120)]
    groups = duplicates.duplicate_groups(texts)
    assert len(np.unique(groups)) == 30
    labels = np.array([i % 30 % 2 for i in range(120)])
    for seed in range(3):
        for train, test in probing.fold_splits(labels, groups, 5, seed):
            assert not set(groups[train]) & set(groups[test])


def test_texts_the_adaptation_trained_on_are_left_out(bert_dir, tmp_path):
    docs = make_documents(80, seed=4)
    data = labelled_csv(tmp_path / "d.csv", docs, ["a" if i % 2 else "b" for i in range(len(docs))])
    seen = leakage.seen_texts(d.upper() + "  " for d in docs[:30])  # the same texts, as a corpus may hold them
    report = probing.probe(ProbeConfig(models=(ModelConfig(str(bert_dir)),), data=DataConfig(str(data)), max_length=32),
                           seen=seen)
    assert report["leakage"] == {"seen_rows": 30, "unseen_rows": 50, "tested_rows": 50, "probed": "unseen"} and report["rows"] == 50
    # Too few unseen rows: the probe refuses rather than test texts the adaptation saw (it once
    # tested all rows then, with a warning).
    with pytest.raises(MlmAdaptError, match=r"class\(es\) .* have too few"):
        probing.probe(ProbeConfig(models=(ModelConfig(str(bert_dir)),), data=DataConfig(str(data)), max_length=32),
                      seen=leakage.seen_texts(docs[:75]))


def test_the_probe_reports_a_baseline_per_class_scores_and_its_comparison_as_json(capsys, bert_dir, distilbert_dir, tmp_path):
    docs = make_documents(60, seed=2)
    data = labelled_csv(tmp_path / "d.csv", docs, ["a" if i % 3 else "b" for i in range(len(docs))])
    report = _compared(capsys, bert_dir, distilbert_dir, data, "--folds", "4")
    assert report["folds"] == 4 and report["baseline"]["accuracy"] == pytest.approx(40 / 60)
    for metric in ("accuracy", "macro_f1"):
        comparison = report["comparison"][metric]
        assert set(comparison) >= {"difference", "interval", "significant"}
        assert comparison["interval"][0] <= comparison["difference"] <= comparison["interval"][1]
    model = report["models"][0]
    assert set(model["per_class"]) == {"a", "b"} and model["per_class"]["a"]["support"] == 40
    assert np.array(model["confusion"]).sum() == 60 * len(report["seeds"])


def test_too_few_rows_for_the_folds_is_one_error_line(capsys, bert_dir, tmp_path):
    docs = make_documents(14, seed=2)
    data = labelled_csv(tmp_path / "d.csv", docs, ["a"] * 8 + ["b"] * 6)
    code, _, err = run_main(capsys, "probe", "--model", str(bert_dir), "--data", str(data), "--folds", "7")
    assert code == 2 and err.startswith("error: --label-column: class 1 has 6 distinct texts, too few for 7 folds")


def test_probe_seen_names_a_training_corpus_whose_texts_are_left_out(capsys, bert_dir, data_root, tmp_path, documents):
    # 30 labelled rows are lines of docs.txt (written in another case); 50 are new texts.
    texts = [d.upper() for d in documents[:30]] + make_documents(50, seed=11)
    data = labelled_csv(tmp_path / "d.csv", texts, ["a" if i % 2 else "b" for i in range(len(texts))])
    code, out, err = run_main(capsys, "probe", "--model", str(bert_dir), "--data", str(data),
                              "--seen", str(data_root / "docs.txt"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["leakage"] == {"seen_rows": 30, "unseen_rows": 50, "tested_rows": 50, "probed": "unseen"} and report["rows"] == 50
    code, out, _ = run_main(capsys, "probe", "--model", str(bert_dir), "--data", str(data), "--seen", str(data_root / "docs.txt"))
    assert code == 0 and "30 labelled rows whose text the adaptation trained on were left out" in out.replace("\n", " ")


def test_no_verdict_when_neither_model_beats_the_majority_class():
    truth = np.array([0] * 300 + [1] * 100)
    groups = np.arange(400)
    rng = np.random.default_rng(3)
    majority = _scores("majority", truth, np.zeros((2, 400), dtype=int))
    collapsed = _scores("collapsed", truth, np.zeros((2, 400), dtype=int))  # learned nothing: the majority class
    guessing = _scores("guessing", truth, (rng.random((2, 400)) < 0.25).astype(int))  # chance, different macro-F1
    report = probing.compare(collapsed, guessing, groups, baseline=majority)
    assert report["no_verdict"] == "neither model beats the majority class"
    assert report["macro_f1"]["significant"] is None and report["macro_f1"]["difference"] > 0.05
    learned = _scores("learned", truth, np.where(rng.random((2, 400)) < 0.9, truth, 1 - truth))
    assert probing.compare(collapsed, learned, groups, baseline=majority)["accuracy"]["significant"] is True


def test_the_group_bootstrap_resamples_groups_and_reports_the_pooled_difference():
    from mlm_adapt.evaluation.paired_tests import group_bootstrap

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 200)
    first = _scores("a", truth, np.where(rng.random((2, 200)) < 0.7, truth, 1 - truth))
    second = _scores("b", truth, np.where(rng.random((2, 200)) < 0.8, truth, 1 - truth))
    result = group_bootstrap(first, second, np.arange(200), 0.95, seed=3)
    low, difference, high = result["accuracy"]
    assert difference == pytest.approx(np.mean(second.predicted == truth) - np.mean(first.predicted == truth))
    assert result["macro_f1"][1] == pytest.approx(np.mean(second.macro_f1) - np.mean(first.macro_f1))
    assert low < difference < high
    # Each text twice, the copies one group: the same groups drawn, so the very same interval.
    doubled = [_scores(s.model, np.repeat(truth, 2), np.repeat(s.predicted, 2, axis=1)) for s in (first, second)]
    again = group_bootstrap(*doubled, np.repeat(np.arange(200), 2), 0.95, seed=3)
    assert again["accuracy"] == pytest.approx(result["accuracy"]) and again["macro_f1"] == pytest.approx(result["macro_f1"])
    # Counted as 400 independent rows instead, the interval would be narrower: groups matter.
    naive = group_bootstrap(*doubled, np.arange(400), 0.95, seed=3)
    assert naive["accuracy"][2] - naive["accuracy"][0] < high - low


def test_fine_tuning_is_compared_by_the_corrected_t_and_the_frozen_probe_by_the_bootstrap():
    from mlm_adapt.evaluation.paired_tests import corrected_t

    rng = np.random.default_rng(6)
    truth = rng.integers(0, 2, 300)
    first = _scores("a", truth, np.where(rng.random((2, 300)) < 0.7, truth, 1 - truth))
    second = _scores("b", truth, np.where(rng.random((2, 300)) < 0.75, truth, 1 - truth))
    groups = np.arange(300)
    tuned = probing.compare(first, second, groups, test="corrected-t")
    assert tuned["test"] == "corrected repeated k-fold t"
    assert tuned["accuracy"]["interval"] == pytest.approx(list(corrected_t(first, second, "accuracy", 0.95)[::2]))
    frozen = probing.compare(first, second, groups, seed=1)
    assert frozen["test"] == "group bootstrap" and frozen == probing.compare(first, second, groups, seed=1)  # seeded
