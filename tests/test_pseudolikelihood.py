"""Pseudo-perplexity: each token masked in turn, batched, equal to a one-forward-per-token loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.evaluation.pseudolikelihood import masked_copies, pseudo_token_nll


def test_each_scored_position_gets_one_copy_masking_the_rest_of_its_word():
    ids = np.array([1, 10, 11, 12, 13, 2])
    words = np.array([-1, 0, 1, 1, 1, -1])  # CLS, a one-piece word, a three-piece word, SEP
    inputs, labels = masked_copies(ids, words, mask_id=4)
    assert inputs.tolist() == [[1, 4, 11, 12, 13, 2], [1, 10, 4, 4, 4, 2], [1, 10, 11, 4, 4, 2], [1, 10, 11, 12, 4, 2]]
    assert (labels != IGNORE_INDEX).sum(axis=1).tolist() == [1, 1, 1, 1]
    assert labels[np.arange(4), [1, 2, 3, 4]].tolist() == [10, 11, 12, 13]
    plain, _ = masked_copies(ids, words, mask_id=4, word_l2r=False)
    assert plain[1].tolist() == [1, 10, 4, 12, 13, 2]  # Salazar et al.: only the token itself


def _reference(model, chunks, mask_id: int, word_l2r: bool) -> tuple[float, int]:
    """One forward pass per scored token, full logits: the slow definition."""
    total, count = 0.0, 0
    for row in range(len(chunks)):
        ids, words, attention = chunks.input_ids[row], chunks.word_ids[row], chunks.attention_mask[row]
        for p in np.nonzero(words >= 0)[0]:
            masked = ids.copy()
            masked[p] = mask_id
            if word_l2r:
                masked[(words == words[p]) & (np.arange(len(ids)) > p)] = mask_id
            with torch.inference_mode():
                logits = model(input_ids=torch.from_numpy(masked)[None], attention_mask=torch.from_numpy(attention)[None]).logits
            total -= float(torch.log_softmax(logits[0, p].float(), dim=-1)[ids[p]])
            count += 1
    return total, count


@pytest.mark.parametrize("word_l2r", [True, False])
@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir"])
def test_batched_pseudo_nll_equals_the_slow_loop(request, data_root, model, word_l2r):
    from mlm_adapt.config import DataConfig, ModelConfig
    from mlm_adapt.data.splits import load_split
    from mlm_adapt.modeling.loading import load_model, load_tokenizer
    from mlm_adapt.modeling.objective import MaskedLMObjective

    config = ModelConfig(str(request.getfixturevalue(model)))
    tokenizer, network = load_tokenizer(config), load_model(config).eval()
    chunks = load_split(DataConfig(data=str(data_root / "docs.txt"), chunk_size=24, eval_size=3), tokenizer, 0, 128).eval
    chunks = chunks.select(np.arange(3))
    tokens = pseudo_token_nll(MaskedLMObjective(network), chunks, tokenizer.mask_token_id, "cpu", batch_size=16,
                              word_l2r=word_l2r)
    fast = float(tokens.sum()), int((tokens > 0).sum())  # every scored token has a positive NLL
    slow = _reference(network, chunks, tokenizer.mask_token_id, word_l2r)
    assert fast[1] == slow[1] == int((chunks.word_ids >= 0).sum())
    assert fast[0] == pytest.approx(slow[0], rel=1e-5)


def _evaluate_pseudo(capsys, bert_dir, data_root, *extra: str):
    from conftest import run_main

    return run_main(capsys, "evaluate", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"), "--chunk-size",
                    "32", "--eval-size", "10", "--precision", "fp32", "--pseudo", "--max-sentences", "4", *extra)


def test_evaluate_pseudo_on_the_command_line(capsys, bert_dir, data_root):
    import json

    from conftest import run_main

    code, out, err = _evaluate_pseudo(capsys, bert_dir, data_root, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["scored_tokens"] > 4 * 20 and result["pseudo_perplexity"] == pytest.approx(math.exp(result["pseudo_nll"]))
    code, _, err = run_main(capsys, "evaluate", "--pseudo", "--max-sentences", "0")
    assert code == 2 and "--max-sentences must be a positive number" in err


def test_each_token_keeps_its_own_score_for_the_interval(bert_dir, data_root):
    from mlm_adapt.config import DataConfig, ModelConfig
    from mlm_adapt.data.splits import load_split
    from mlm_adapt.modeling.loading import load_model, load_tokenizer
    from mlm_adapt.modeling.objective import MaskedLMObjective
    config = ModelConfig(str(bert_dir))
    tokenizer, network = load_tokenizer(config), load_model(config).eval()
    chunks = load_split(DataConfig(data=str(data_root / "docs.txt"), chunk_size=24, eval_size=3), tokenizer, 0, 128).eval
    chunks = chunks.select(np.arange(2))
    tokens = pseudo_token_nll(MaskedLMObjective(network), chunks, tokenizer.mask_token_id, "cpu", batch_size=7)
    assert tokens.shape == chunks.input_ids.shape and ((tokens > 0) == (chunks.word_ids >= 0)).all()
    # Token by token, as the one-forward-per-token loop scores them (batches of 7 cut across rows).
    ids, words, attention = chunks.input_ids[1], chunks.word_ids[1], chunks.attention_mask[1]
    copies, _ = masked_copies(ids, words, tokenizer.mask_token_id)
    single = np.zeros(len(ids))
    for copy, p in zip(copies, np.flatnonzero(words >= 0)):
        with torch.inference_mode():
            logits = network(input_ids=torch.from_numpy(copy)[None], attention_mask=torch.from_numpy(attention)[None]).logits
        single[p] = -float(torch.log_softmax(logits[0, p].float(), dim=-1)[ids[p]])
    assert tokens[1] == pytest.approx(single, rel=1e-4, abs=1e-6)


def test_pseudo_perplexity_comes_with_an_interval_over_documents(capsys, bert_dir, data_root):
    import json

    # Enough held-out documents (>= intervals.MIN_DOCUMENTS) for an interval that is a 95% one.
    enough = ("--max-sentences", "60", "--eval-size", "60")
    code, out, err = _evaluate_pseudo(capsys, bert_dir, data_root, "--json", *enough)
    assert code == 0, err
    result = json.loads(out)
    low, high = result["pseudo_perplexity_interval"]
    assert low < result["pseudo_perplexity"] < high
    count, unit = result["interval_resamples"].split()
    assert unit in ("documents", "chunks") and int(count) >= 2
    code, out, err = _evaluate_pseudo(capsys, bert_dir, data_root, *enough)
    assert code == 0 and "95% interval" in out and f"over {result['interval_resamples']}" in out
    code, out, err = _evaluate_pseudo(capsys, bert_dir, data_root)  # 4 chunks: a handful of documents
    assert code == 0 and "[95% interval" not in out and "interval is unreliable" in out and "no verdict" in out


def _text_reference(model, tokenizer, text: str, word_l2r: bool) -> tuple[float, int]:
    """The slow definition for one text on its own: one forward pass per scored token."""
    encoded = tokenizer(text)
    ids, words = np.array(encoded["input_ids"]), np.array([-1 if w is None else w for w in encoded.word_ids()])
    total, count = 0.0, 0
    for p in np.nonzero(words >= 0)[0]:
        masked = ids.copy()
        masked[p] = tokenizer.mask_token_id
        if word_l2r:
            masked[(words == words[p]) & (np.arange(len(ids)) > p)] = tokenizer.mask_token_id
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(masked)[None]).logits
        total -= float(torch.log_softmax(logits[0, p].float(), dim=-1)[ids[p]])
        count += 1
    return total, count


@pytest.mark.parametrize("word_l2r", [True, False])
@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir"])
def test_per_text_pll_equals_the_slow_loop_for_texts_of_different_lengths(request, model, word_l2r):
    from mlm_adapt.config import ModelConfig
    from mlm_adapt.evaluation.pseudolikelihood import text_rows
    from mlm_adapt.modeling.loading import load_model, load_tokenizer
    from mlm_adapt.modeling.objective import MaskedLMObjective

    config = ModelConfig(str(request.getfixturevalue(model)))
    tokenizer, network = load_tokenizer(config), load_model(config).eval()
    texts = ["The film.", "A cinematographically overwhelming story, loved by the cast and the director alike.",
             "the good actor ruined the long boring ending of the movie."]
    rows = text_rows(tokenizer, texts, 64)
    token_nll = pseudo_token_nll(MaskedLMObjective(network), rows, tokenizer.mask_token_id, "cpu", batch_size=5,
                                 word_l2r=word_l2r)
    for i, text in enumerate(texts):  # padded rows in one batch, each text scored alone
        nll, count = _text_reference(network, tokenizer, text, word_l2r)
        assert int((rows.word_ids[i] >= 0).sum()) == count
        assert float(token_nll[i].sum()) == pytest.approx(nll, abs=1e-4, rel=1e-5)


def test_per_text_scores_are_written_as_json_lines_joined_to_the_data_rows(capsys, bert_dir, data_root, documents, tmp_path):
    import json

    out = tmp_path / "scores.jsonl"
    code, stdout, err = _evaluate_pseudo(capsys, bert_dir, data_root, "--per-text", str(out), "--pll", "original", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    scores = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scores) == summary["texts"] == 4 and summary["pll"] == "original"
    assert sum(s["tokens"] for s in scores) == summary["scored_tokens"]
    assert sum(s["nll"] for s in scores) / summary["scored_tokens"] == pytest.approx(summary["pseudo_nll"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    for s in scores:  # each index is a row of --data, scored on its own
        assert s["tokens"] == len(tokenizer(documents[s["index"]], truncation=True, max_length=32)["input_ids"]) - 2
    code, _, err = _evaluate_pseudo(capsys, bert_dir, data_root, "--pll", "sentence")
    assert code == 2 and "--pll must be word-l2r or original" in err


def test_pseudo_perplexity_against_a_base_is_paired_on_the_same_texts(capsys, bert_dir, data_root, tmp_path):
    import json

    from conftest import train_config
    from mlm_adapt.training.loop import train

    adapted = tmp_path / "adapted"
    train(train_config(bert_dir, data_root / "docs.txt", adapted, max_steps=6))
    out = tmp_path / "scores.jsonl"
    code, stdout, err = _evaluate_pseudo(capsys, adapted, data_root, "--compare", str(bert_dir), "--per-text", str(out), "--json")
    assert code == 0, err
    summary, scores = json.loads(stdout), [json.loads(line) for line in out.read_text().splitlines()]
    base_alone = json.loads(_evaluate_pseudo(capsys, bert_dir, data_root, "--json")[1])
    comparison = summary["comparison"]
    assert comparison["base_perplexity"] == pytest.approx(base_alone["pseudo_perplexity"], rel=1e-6)  # the same texts
    tokens = sum(s["tokens"] for s in scores)
    ratio = math.exp((sum(s["nll"] for s in scores) - sum(s["base_nll"] for s in scores)) / tokens)
    assert comparison["ratio"] == pytest.approx(ratio, rel=1e-6)
    assert comparison["interval"][0] <= comparison["ratio"] <= comparison["interval"][1]
    assert comparison["significant"] is None  # 4 texts: too few for a verdict, and it says so
    assert "unreliable" in comparison["interval_caveat"] or "fewer" in comparison["interval_caveat"]
    code, _, err = _evaluate_pseudo(capsys, bert_dir, data_root, "--words", "3")
    assert code == 2 and "--words" in err and "--compare" in err
