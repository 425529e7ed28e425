"""The probe protocol: rows whose text a compared model trained on train the probe and are
never tested; a model folder says what it trained on (``provenance``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import labelled_csv, make_documents, run_main, train_config
from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig
from mlm_adapt.data.duplicates import duplicate_groups, normalised
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation import labelled, leakage, probing


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rows=st.integers(30, 90), max_rows=st.integers(20, 120), folds=st.integers(2, 4), seed=st.integers(0, 99))
def test_a_seen_row_is_never_tested(data, rows, max_rows, folds, seed):
    texts = [f"text {i % (rows - 3)}" for i in range(rows)]  # a few duplicates
    labels = np.array([i % 2 for i in range(rows)])
    seen = {normalised(t) for t in data.draw(st.sets(st.sampled_from(texts), max_size=rows - 10))}
    try:
        testable, leak = leakage.partition(texts, labels, ["a", "b"], seen, None, max(probing.MIN_PER_CLASS, folds))
    except MlmAdaptError:
        assume(False)
    order, tested = labelled.sample(testable, SimpleNamespace(max_rows=max_rows, seed=seed))
    chosen = [texts[i] for i in order]
    groups = duplicate_groups(chosen)
    assume(all(len(np.unique(groups[:tested][labels[order][:tested] == c])) >= folds for c in (0, 1)))
    calls = []

    def predict(train, test, _seed):
        calls.append((train, test))
        return np.zeros(len(test), dtype=int)

    extra = np.arange(tested, len(order))
    predicted, fold = probing.out_of_fold(labels[order][:tested], groups[:tested], [seed, seed + 1], folds, predict, extra)
    for train, test in calls:
        assert all(normalised(chosen[i]) not in seen for i in test)  # never a seen row under test
        assert set(extra) <= set(train) and not set(train) & set(test)
    assert (fold >= 0).all() and predicted.shape == (2, tested)  # every testable row tested once a repeat
    assert leak["seen_rows"] == sum(normalised(t) in seen for t in texts)
    assert len(order) <= max_rows and tested == min(int(testable.sum()), max_rows)


def test_seen_rows_train_the_probe_and_the_rest_are_tested(bert_dir, tmp_path):
    docs = make_documents(80, seed=4)
    data = labelled_csv(tmp_path / "d.csv", docs, ["a" if i % 2 else "b" for i in range(len(docs))])
    seen = leakage.seen_texts(d.upper() + "  " for d in docs[:30])
    report = probing.probe(ProbeConfig(models=(ModelConfig(str(bert_dir)),), data=DataConfig(str(data)), max_length=32), seen=seen)
    assert report["rows"] == 50 and report["training_only_rows"] == 30  # the seen rows train every fold
    capped = probing.probe(ProbeConfig(models=(ModelConfig(str(bert_dir)),), data=DataConfig(str(data)), max_length=32,
                                       max_rows=60), seen=seen)
    assert capped["rows"] == 50 and capped["training_only_rows"] == 10  # the tested rows first, seen ones fill the rest


def test_rows_that_only_train_do_not_narrow_the_corrected_t():
    from mlm_adapt.evaluation.paired_tests import corrected_t

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 200)
    fold = np.tile(np.arange(200) % 5, (2, 1))
    a = probing.ProbeScores("a", truth, np.where(rng.random((2, 200)) < 0.7, truth, 1 - truth), ["x", "y"], fold)
    b = probing.ProbeScores("b", truth, np.where(rng.random((2, 200)) < 0.8, truth, 1 - truth), ["x", "y"], fold)
    low, mean, high = corrected_t(a, b, "accuracy", 0.95)
    extra = [probing.ProbeScores(s.model, s.truth, s.predicted, s.classes, s.fold, extra_training=800) for s in (a, b)]
    low2, mean2, high2 = corrected_t(*extra, "accuracy", 0.95)
    # They sit in every training fold: the folds overlap more, not less (a narrower interval
    # was liberal in the calibration: 10% "significant" on equally good encoders).
    assert (low2, mean2, high2) == (low, mean, high)


def test_probe_knows_what_a_run_folder_and_a_blend_of_it_trained_on(capsys, bert_dir, data_root, tmp_path, documents):
    from mlm_adapt.modeling.preparation import prepare
    from mlm_adapt.training.loop import train

    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "run", max_steps=2)
    train(config)
    held_out = set(prepare(config).data.held_out.tolist())
    texts = documents[:80] + make_documents(60, seed=21)
    data = labelled_csv(tmp_path / "task.csv", texts, ["a" if i % 2 else "b" for i in range(len(texts))])
    trained = sum(i not in held_out for i in range(80))
    code, out, err = run_main(capsys, "probe", "--model", str(tmp_path / "run"), "--data", str(data), "--json")
    assert code == 0, err
    assert json.loads(out)["leakage"] == {"seen_rows": trained, "unseen_rows": 140 - trained, "tested_rows": 140 - trained,
                                          "probed": "unseen"}
    code, _, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(tmp_path / "run"), "--alphas", "0,1",
                            "--pick", "1", "--output", str(tmp_path / "blend"))
    assert code == 0, err
    code, out, err = run_main(capsys, "probe", "--model", str(bert_dir), "--compare", str(tmp_path / "blend"), "--data", str(data),
                              "--json")
    assert code == 0, err
    assert json.loads(out)["leakage"]["seen_rows"] == trained  # the blend saw what its adapted model saw
    # A model without a record (a Hub model, a plain folder) is told with --trained-on.
    code, out, err = run_main(capsys, "probe", "--model", str(bert_dir), "--data", str(data), "--trained-on",
                              str(data_root / "docs.txt"), "--json")
    assert code == 0, err
    assert json.loads(out)["leakage"]["seen_rows"] == 80
