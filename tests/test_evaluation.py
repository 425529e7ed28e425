"""Perplexity is exp(total NLL / masked tokens) over fixed masks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlm_adapt.config import MaskingConfig
from mlm_adapt.data.chunking import Chunks
from mlm_adapt.data.held_out import mask_eval_set
from mlm_adapt.data.masking import MaskingVocab
from mlm_adapt.evaluation.perplexity import EvalResult, perplexity


@given(loss=st.floats(0.0, 20.0), tokens=st.integers(1, 10**6))
def test_perplexity_of_a_known_loss_is_exact(loss, tokens):
    assert perplexity(loss * tokens, tokens) == pytest.approx(math.exp(loss), rel=1e-12)


def test_perplexity_weights_tokens_not_batches():
    # Batch A: 100 tokens at mean loss 1; batch B: 1 token at loss 5.
    result = EvalResult(nll_sum=100 * 1.0 + 5.0, masked_tokens=101)
    assert result.loss == pytest.approx(105 / 101)
    assert result.perplexity == pytest.approx(math.exp(105 / 101))
    mean_of_batch_means = (1.0 + 5.0) / 2  # what the seeds compute: e^3 ~ 20, not ~2.83
    assert result.perplexity < math.exp(mean_of_batch_means) / 5


def test_perplexity_overflow_and_empty():
    assert perplexity(1e6, 1) == float("inf")
    assert math.isnan(perplexity(0.0, 0))


def test_eval_masks_are_drawn_once_per_seed():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, size=(20, 16))
    words = np.tile(np.arange(16), (20, 1))
    words[:, 0] = words[:, -1] = -1
    chunks = Chunks(ids, np.ones_like(ids), words)
    vocab = MaskingVocab(4, np.arange(5, 50))
    a = mask_eval_set(chunks, MaskingConfig(), vocab, seed=3)
    b = mask_eval_set(chunks, MaskingConfig(masking="whole-word"), vocab, seed=3)  # training scheme is irrelevant
    c = mask_eval_set(chunks, MaskingConfig(), vocab, seed=4)
    assert (a.labels == b.labels).all() and (a.input_ids == b.input_ids).all()
    assert (a.labels != c.labels).any()
    assert 0 < a.masked_tokens < ids.size


def test_a_document_cut_across_chunks_is_resampled_whole():
    from mlm_adapt.evaluation.intervals import perplexity_interval, pieces
    from mlm_adapt.evaluation.perplexity import EvalResult, resampled_units

    # Documents of 6, 6 and 4 masked tokens in rows of 4: row 1 ends document 0 and starts 1.
    numbering = np.repeat(np.arange(3), 6)[:16].reshape(4, 4)
    masked = np.ones((4, 4), dtype=bool)
    token_nll = np.repeat([1.0, 2.0, 4.0], 6)[:16].reshape(4, 4)
    nll, tokens, docs, owners = pieces(token_nll, masked, numbering)
    assert docs.tolist() == [0, 0, 1, 1, 2] and owners.tolist() == [0, 1, 1, 2, 3]
    result = EvalResult(float(nll.sum()), int(tokens.sum()), 0, nll, tokens, docs, owners)
    by_document = perplexity_interval(np.array([6.0, 12.0, 16.0]), np.array([6, 6, 4]), 5)
    assert result.interval(5) == by_document and resampled_units(result) == "3 documents"
    row_nll, row_tokens, row_documents = result.by_row(5)  # a fifth chunk with nothing masked
    assert row_nll.tolist() == [4.0, 6.0, 8.0, 16.0, 0.0] and row_tokens.tolist() == [4, 4, 4, 4, 0]
    assert row_documents.tolist() == [0, 1, 1, 2, 2]


def test_a_checkpoint_from_before_pieces_still_gets_its_change_interval():
    from mlm_adapt.evaluation.intervals import perplexity_interval
    from mlm_adapt.evaluation.perplexity import EvalResult, evaluation_record

    rng = np.random.default_rng(1)
    masked = rng.random((30, 10)) < 0.3
    masked[:, 0] = True  # something masked in every chunk
    numbering = np.repeat(np.arange(15), 20).reshape(30, 10)
    before_nll, after_nll = (np.where(masked, rng.uniform(1, 5, masked.shape), 0.0) for _ in range(2))
    results = [EvalResult.from_tokens(t, masked, numbering) for t in (before_nll, after_nll)]
    assert results[0].nll_sum == pytest.approx(before_nll.sum()) and results[0].masked_tokens == masked.sum()
    now = evaluation_record({"eval": results[0]}, 3)
    assert len(now["piece_nll"]) == len(results[0].piece_nll) and "row_nll" not in now
    paired = evaluation_record({"eval": results[1]}, 3, before=now)["perplexity_change_interval"]
    assert paired == list(perplexity_interval(results[1].piece_nll, results[1].piece_tokens, 3,
                                              baseline=results[0].piece_nll, groups=results[1].piece_documents))
    # An older checkpoint kept the NLL per chunk: the pairing falls back to chunks.
    old = {k: v for k, v in now.items() if k != "piece_nll"} | {"row_nll": before_nll.sum(axis=1).tolist()}
    legacy = evaluation_record({"eval": results[1]}, 3, before=old)["perplexity_change_interval"]
    assert legacy == list(perplexity_interval(after_nll.sum(axis=1), masked.sum(axis=1), 3,
                                              baseline=before_nll.sum(axis=1), groups=numbering[:, -1]))
    assert evaluation_record({"eval": results[1]}, 3, before={}).keys() == now.keys() - {"piece_nll"}


@pytest.mark.parametrize("sparse", [True, False])
def test_per_row_sums_add_up_to_the_batch_sum(bert_dir, sparse):
    import torch

    from mlm_adapt.config import ModelConfig
    from mlm_adapt.modeling.loading import load_model
    from mlm_adapt.modeling.objective import masked_lm_nll

    model = load_model(ModelConfig(str(bert_dir))).eval()
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(5, 100, size=(6, 24)))
    labels = torch.where(torch.from_numpy(rng.random((6, 24)) < 0.2), ids, torch.full_like(ids, -100))
    labels[2] = -100  # a row with nothing masked
    with torch.inference_mode():
        total, count = masked_lm_nll(model, ids, torch.ones_like(ids), labels, sparse=sparse)
        rows, same = masked_lm_nll(model, ids, torch.ones_like(ids), labels, sparse=sparse, per_row=True)
        third, _ = masked_lm_nll(model, ids[3:4], torch.ones_like(ids[3:4]), labels[3:4], sparse=sparse)
    assert same == count and rows.shape == (6,) and rows[2] == 0
    assert float(rows.sum()) == pytest.approx(float(total), rel=1e-5)
    assert float(rows[3]) == pytest.approx(float(third), rel=1e-5)
    with torch.inference_mode():
        tokens, same = masked_lm_nll(model, ids, torch.ones_like(ids), labels, sparse=sparse, per_token=True)
    assert same == count and tokens.shape == ids.shape and (tokens[labels == -100] == 0).all()
    assert (tokens[labels != -100] > 0).all() and torch.allclose(tokens.sum(dim=1), rows)


def test_a_change_over_too_few_documents_gets_no_verdict():
    from mlm_adapt.evaluation.perplexity import before_after

    record = {"perplexity": 300.0, "perplexity_interval": [280.0, 320.0], "eval_loss": 5.7, "eval_nll_sum": 570.0,
              "eval_masked_tokens": 100}
    after = {**record, "perplexity": 150.0, "perplexity_change_interval": [0.4, 0.6]}
    for resamples, verdict in (("40 documents", True), ("12 documents", None), ("9 chunks", None)):
        metrics = before_after(record, {**after, "interval_resamples": resamples}, 400)
        assert metrics["change_exceeds_noise"] is verdict
        assert (metrics["interval_caveat"] is None) == (verdict is not None)


def test_evaluate_compare_equals_the_runs_own_before_after_interval(capsys, bert_dir, data_root, tmp_path):
    import json

    from conftest import run_main, train_config
    from mlm_adapt.training.loop import train

    out = tmp_path / "o"
    metrics = train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=4))
    common = ["--data", str(data_root / "docs.txt"), "--chunk-size", "48", "--eval-size", "40", "--seed", "7",
              "--precision", "fp32"]
    code, stdout, err = run_main(capsys, "evaluate", "--model", str(out), "--compare", str(bert_dir), *common, "--json")
    assert code == 0, err
    comparison = json.loads(stdout)["comparison"]
    assert comparison["base_perplexity"] == pytest.approx(metrics["perplexity_before"], rel=1e-4)
    assert comparison["ratio"] == pytest.approx(metrics["perplexity_after"] / metrics["perplexity_before"], rel=1e-4)
    assert comparison["interval"] == pytest.approx(metrics["perplexity_change_interval"], rel=1e-3)
    assert comparison["significant"] == metrics["change_exceeds_noise"]
    assert comparison["interval_resamples"] == metrics["interval_resamples"]
    code, stdout, _ = run_main(capsys, "evaluate", "--model", str(out), "--compare", str(bert_dir), *common)
    assert code == 0 and "ratio" in stdout and ("significant" in stdout or "no verdict" in stdout)


def test_evaluate_compare_refuses_another_vocabulary(capsys, bert_dir, roberta_dir, data_root):
    from conftest import run_main

    code, _, err = run_main(capsys, "evaluate", "--model", str(bert_dir), "--compare", str(roberta_dir),
                            "--data", str(data_root / "docs.txt"), "--chunk-size", "48")
    assert code == 2 and err.startswith("error: --compare") and "vocabulary" in err
