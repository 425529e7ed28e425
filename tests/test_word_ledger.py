"""evaluate --compare BASE --words N: what changed, whole word by whole word, on the same
held-out tokens and masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_main, train_config
from mlm_adapt.config import WORD_MIN_OCCURRENCES
from mlm_adapt.data.chunking import Chunks
from mlm_adapt.data.held_out import MaskedSet
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation.word_ledger import Occurrences, ledger, occurrences


class _Tokenizer:
    def decode(self, ids: list[int]) -> str:
        return "-".join(str(i) for i in ids)


def test_every_masked_token_counts_once_for_its_word():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, size=(3, 10))
    words = np.tile(np.repeat(np.arange(5), 2), (3, 1))  # two pieces per word
    labels = np.where(rng.random((3, 10)) < 0.4, ids, -100)
    base, model = rng.random((3, 10)) * (labels != -100), rng.random((3, 10)) * (labels != -100)
    found = occurrences(base, model, MaskedSet(ids, np.ones_like(ids), labels), Chunks(ids, np.ones_like(ids), words), _Tokenizer())
    cells = np.concatenate(list(found.words.values()))
    assert cells[:, 0].sum() == pytest.approx(base.sum()) and cells[:, 1].sum() == pytest.approx(model.sum())
    assert cells[:, 2].sum() == (labels != -100).sum()
    assert all(len(word.split("-")) == 2 for word in found.words)  # whole words: both pieces, masked or not
    summary = ledger(found, top=3)
    assert summary["base_nll"] == pytest.approx(base.sum()) and summary["model_nll"] == pytest.approx(model.sum())
    assert [r["change"] for r in summary["fell"]] == sorted(r["change"] for r in summary["fell"])
    assert all(r["change"] < 0 for r in summary["fell"]) and all(r["change"] > 0 for r in summary["rose"])



def test_words_cut_by_a_chunks_edges_count_in_the_totals_but_are_never_listed():
    # Word 0 of each row began in the chunk before ("##ing"), word 2 of row 0 ends in the next.
    ids = np.array([[1, 20, 21, 30, 31, 40, 41, 2], [1, 50, 51, 30, 31, 60, 61, 2]])
    words = np.array([[-1, 0, 0, 1, 1, 2, 2, -1], [-1, 0, 0, 1, 1, 2, 2, -1]])
    cut = np.zeros(ids.shape, dtype=bool)
    cut[:, 1:3], cut[0, 5:7] = True, True
    labels = np.where(words >= 0, ids, -100)
    base, model = np.where(words >= 0, 2.0, 0.0), np.where(words >= 0, 1.0, 0.0)
    found = occurrences(base, model, MaskedSet(ids, np.ones_like(ids), labels), Chunks(ids, np.ones_like(ids), words, cut=cut),
                        _Tokenizer())
    assert sorted(found.words) == ["30-31", "60-61"] and len(found.cut) == 3
    summary = ledger(found, top=5)
    assert {r["word"] for r in summary["fell"]} == {"30-31", "60-61"} and summary["words"] == 2
    assert summary["cut_words"] == {"occurrences": 3, "masked_tokens": 6, "base_nll": 12.0, "model_nll": 6.0}
    assert summary["base_nll"] == pytest.approx(base.sum()) and summary["model_nll"] == pytest.approx(model.sum())


@given(counts=st.lists(st.integers(1, 12), min_size=1, max_size=30), top=st.integers(1, 8), seed=st.integers(0, 999))
@settings(max_examples=60, deadline=None)
def test_a_ranking_lists_the_words_that_changed_most_by_its_measure(counts, top, seed):
    rng = np.random.default_rng(seed)
    words = {f"w{i}": np.column_stack([rng.random(n) * 5, rng.random(n) * 5, np.ones(n)]) for i, n in enumerate(counts)}
    found = Occurrences(words, np.zeros((0, 3)))
    total, mean = ledger(found, top), ledger(found, top, by="mean")
    for summary, key, least in ((total, "change", 1), (mean, "mean_change", WORD_MIN_OCCURRENCES)):
        eligible = {w: c for w, c in words.items() if len(c) >= least}
        measure = {w: (c[:, 1] - c[:, 0]).sum() / (len(c) if key == "mean_change" else 1) for w, c in eligible.items()}
        fell = sorted((w for w in measure if measure[w] < 0), key=lambda w: (measure[w], w))[:top]
        rose = sorted((w for w in measure if measure[w] > 0), key=lambda w: (-measure[w], w))[:top]
        assert [r["word"] for r in summary["fell"]] == fell and [r["word"] for r in summary["rose"]] == rose
        assert summary["min_occurrences"] == least and summary["words"] == len(words)  # every word counts in the totals
        assert summary["base_nll"] == pytest.approx(sum(c[:, 0].sum() for c in words.values()))
    with pytest.raises(MlmAdaptError, match="--words-by must be total or mean"):
        ledger(found, top, by="median")

def test_the_ledger_of_a_run_sums_to_the_sets_totals(bert_dir, data_root, tmp_path, capsys):
    from mlm_adapt.training.loop import train

    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=8)
    metrics = train(config)
    code, out, err = run_main(capsys, "evaluate", "--model", str(config.output), "--compare", str(bert_dir), "--words", "5",
                              "--data", str(data_root / "docs.txt"), "--chunk-size", "48", "--eval-size", "40", "--seed", "7",
                              "--batch-size", "16", "--precision", "fp32", "--json")
    assert code == 0, err
    summary = json.loads(out)
    words, tokens = summary["words"], summary["masked_tokens"]
    # The words' NLLs add up to each model's total over the masked tokens (perplexity = exp(total / tokens)).
    assert words["model_nll"] == pytest.approx(math.log(summary["perplexity"]) * tokens, rel=1e-6)
    assert words["base_nll"] == pytest.approx(math.log(summary["comparison"]["base_perplexity"]) * tokens, rel=1e-6)
    assert summary["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=1e-6)
    assert 0 < len(words["fell"]) <= 5 and all("##" not in row["word"] for row in words["fell"] + words["rose"])
    assert all(row["mean_change_interval"] is None or row["mean_change_interval"][0] <= row["mean_change"] <= row["mean_change_interval"][1]
               for row in words["fell"])
    code, out, _ = run_main(capsys, "evaluate", "--model", str(config.output), "--compare", str(bert_dir), "--words", "3",
                            "--data", str(data_root / "docs.txt"), "--chunk-size", "48", "--eval-size", "40", "--seed", "7")
    assert code == 0 and "words that got easier" in out
    code, out, _ = run_main(capsys, "evaluate", "--model", str(config.output), "--compare", str(bert_dir), "--words", "3",
                            "--words-by", "mean", "--data", str(data_root / "docs.txt"), "--chunk-size", "48", "--eval-size", "40",
                            "--seed", "7")
    assert code == 0 and f"words seen {WORD_MIN_OCCURRENCES} times or more" in out


def test_a_run_reports_what_changed_word_by_word(bert_dir, data_root, tmp_path):
    from mlm_adapt.training.loop import train

    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=8)
    metrics = train(config)
    words = metrics["words"]  # the saved model against the base, on the run's held-out masks
    tokens = metrics["eval_masked_tokens"]
    assert words["model_nll"] == pytest.approx(math.log(metrics["perplexity_after"]) * tokens, rel=1e-5)
    assert words["base_nll"] == pytest.approx(math.log(metrics["perplexity_before"]) * tokens, rel=1e-5)
    assert len(words["fell"]) <= 15 and words["fell"]
    report = (tmp_path / "o" / "report.html").read_text()
    assert "What changed, word by word" in report and words["fell"][0]["word"] in report
    # The lists by change per occurrence, among words seen often enough.
    by_mean = words["mean_fell"] + words["mean_rose"]
    assert words["mean_fell"] and all(r["count"] >= WORD_MIN_OCCURRENCES for r in by_mean)
    assert [r["mean_change"] for r in words["mean_fell"]] == sorted(r["mean_change"] for r in words["mean_fell"])
    assert f"got easier per occurrence (seen {WORD_MIN_OCCURRENCES} times or more)" in report


@pytest.mark.parametrize("args, message", [
    (["--words-by", "mean"], "--words-by ranks the --words list: give --words N"),
    (["--compare", "BASE", "--words", "3", "--words-by", "median"], "--words-by must be total or mean, not 'median'"),
])
def test_a_ranking_without_a_list_or_of_an_unknown_kind_is_one_error_line(capsys, bert_dir, data_root, args, message):
    args = [str(bert_dir) if a == "BASE" else a for a in args]
    code, _, err = run_main(capsys, "evaluate", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"), *args)
    assert code == 2 and err.strip() == f"error: {message}"
