"""Domain vocabulary: the fragmentation report, words added as whole tokens, bits per byte."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import run_main, train_config
from mlm_adapt.data import tokenization
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation import vocabulary
from mlm_adapt.training.loop import train

MODELS = ["bert_dir", "roberta_dir"]


def _load(request, model):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = request.getfixturevalue(model)
    return AutoModelForMaskedLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def test_costliest_domain_words_rank_first_and_general_text_demotes_shared_ones(bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    domain = ["the dull boring ending."] * 30 + ["the extraordinarily good cast."] * 2
    general = ["the dull boring plot."] * 50
    alone = vocabulary.fragmentation(tok, domain, top=10)
    costs = [w.cost for w in alone.ranked]
    order = [w.text for w in alone.ranked]
    assert costs == sorted(costs, reverse=True) and order.index("dull") < order.index("extraordinarily")
    assert all(len(w.pieces) > 1 and w.text.isalpha() for w in alone.ranked)  # "the", "ending", "." never listed
    assert alone.ranked[order.index("dull")].cost == 30 * (len(vocabulary.pieces_of(tok, "dull")) - 1)
    # "dull" and "boring" are as common in general text: the domain's own word outranks them.
    compared = vocabulary.fragmentation(tok, domain, general, top=10)
    order = [w.text for w in compared.ranked]
    assert order.index("extraordinarily") < order.index("dull") and order.index("extraordinarily") < order.index("boring")
    words = sum(len(tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(t)) for t in domain)
    assert compared.domain.words == words and compared.general.words == 50 * 5
    split = 30 * 2 + 2 * 2  # dull, boring; extraordinarily, good (4 pieces in the tiny vocabulary)
    assert compared.domain.split_words == split and compared.domain.split_share == pytest.approx(split / words)
    assert compared.domain.tokens_per_word > 1


@pytest.mark.parametrize("model", MODELS)
def test_added_words_are_one_token_with_mean_initialised_rows(request, model, tmp_path):
    net, tok = _load(request, model)
    words = ["unbelievably", "cinematographically"]
    old_rows = {w: tok.convert_tokens_to_ids(list(vocabulary.pieces_of(tok, vocabulary.vocabulary_form(tok, w)))) for w in words}
    embeddings = net.get_input_embeddings().weight.detach().clone()
    bias = net.get_output_embeddings().bias.detach().clone()
    net, extended, added = vocabulary.extend_vocabulary(net, tok, words)

    assert len(extended) == len(tok) + 2 and net.get_input_embeddings().num_embeddings == len(extended)
    assert net.get_output_embeddings().weight is net.get_input_embeddings().weight  # still tied
    for word, entry in zip(words, added):
        rows = old_rows[word]
        assert len(rows) > 1
        assert torch.allclose(net.get_input_embeddings().weight[entry.id], embeddings[rows].mean(dim=0))
        assert torch.isclose(net.get_output_embeddings().bias[entry.id], bias[rows].mean())
        assert extended(f" {word}", add_special_tokens=False)["input_ids"] == [entry.id]
        assert entry.id in extended(f"the {word} film.", add_special_tokens=False)["input_ids"]
    assert torch.equal(net.get_input_embeddings().weight[: len(tok)], embeddings)  # old rows untouched

    net.save_pretrained(tmp_path)
    extended.save_pretrained(tmp_path)
    from transformers import AutoTokenizer, pipeline

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.tokenize(" unbelievably")[-1].removeprefix("Ġ") == "unbelievably"
    assert len(pipeline("fill-mask", model=str(tmp_path))(f"the {tok.mask_token} was unbelievably good.")) == 5


@pytest.mark.parametrize("model", MODELS)
def test_untouched_words_keep_their_tokens(request, model, documents):
    _, tok = _load(request, model)
    _, extended, _ = vocabulary.extend_vocabulary(*_load(request, model), ["unbelievably"])
    for doc in documents[:100]:
        if "unbelievably" not in doc.lower():
            assert extended(doc)["input_ids"] == tok(doc)["input_ids"]


def test_bad_words_to_add(bert_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok, net = AutoTokenizer.from_pretrained(bert_dir), AutoModelForMaskedLM.from_pretrained(bert_dir)
    with pytest.raises(MlmAdaptError, match="'film': it is already in the vocabulary"):
        vocabulary.extend_vocabulary(net, tok, ["unbelievably", "film"])
    with pytest.raises(MlmAdaptError, match="listed twice.*unbelievably"):
        vocabulary.extend_vocabulary(net, tok, ["unbelievably", "Unbelievably"])
    with pytest.raises(MlmAdaptError, match="splits it into words"):
        vocabulary.extend_vocabulary(net, tok, ["two words"])
    empty = tmp_path / "words.txt"
    empty.write_text("# nothing but a comment\n\n")
    with pytest.raises(MlmAdaptError, match="holds no words"):
        vocabulary.read_words_file(empty)
    with pytest.raises(MlmAdaptError, match="--add-tokens must be a positive number"):
        train_config(bert_dir, "d.txt", tmp_path / "o", add_tokens=0)
    with pytest.raises(MlmAdaptError, match="pick one"):
        train_config(bert_dir, "d.txt", tmp_path / "o", add_tokens=3, add_tokens_file=empty)


@pytest.mark.parametrize("model", MODELS)
def test_bits_per_byte_by_hand(request, model):
    from mlm_adapt.evaluation.perplexity import EvalResult

    _, tok = _load(request, model)
    counts = tokenization.token_bytes(tok)
    assert (counts[tok.all_special_ids] == 0).all()
    ids = tok("the film unbelievably", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    by_hand = sum(len(p.removeprefix("##").removeprefix("Ġ")) for p in pieces)
    assert counts[ids].sum() == by_hand == len("thefilmunbelievably")
    result = EvalResult(nll_sum=7.0, masked_tokens=len(ids), masked_bytes=int(counts[ids].sum()))
    assert result.bits_per_byte == pytest.approx(7.0 / math.log(2) / by_hand)


def test_a_run_with_added_tokens_trains_saves_reports_and_resumes_exactly(bert_dir, data_root, tmp_path):
    from transformers import AutoTokenizer

    options = dict(max_steps=6, save_steps=3, keep_checkpoints=None, add_tokens=3)
    full = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "full", **options))
    added = [a["token"] for a in full["added_tokens"]]
    base = AutoTokenizer.from_pretrained(bert_dir)
    expected = vocabulary.fragmentation(base, (data_root / "docs.txt").read_text().splitlines(), top=3).ranked
    assert added == [w.word for w in expected]
    saved = AutoTokenizer.from_pretrained(tmp_path / "full")
    assert all(len(saved.tokenize(word)) == 1 for word in added)
    assert full["bits_per_byte_after"] < full["bits_per_byte_before"]
    assert "Added vocabulary" in (tmp_path / "full" / "report.html").read_text()
    assert "Added vocabulary" in (tmp_path / "full" / "README.md").read_text()

    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", tmp_path / "resumed" / "checkpoints" / "step-3")
    resumed = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "resumed", resume=True, **options))
    timing = {"train_samples_per_second", "train_runtime_seconds", "steps_run", "seconds"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in full.items() if k not in timing}


def test_vocab_command_json(capsys, bert_dir, data_root):
    code, out, err = run_main(capsys, "vocab", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"),
                              "--general-data", str(data_root / "reviews.csv"), "--general-text-column", "review",
                              "--top", "5", "--json")
    assert code == 0, err
    report = json.loads(out)
    scores = [w["score"] for w in report["words"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert {"tokens_per_word", "split_share", "words"} <= set(report["domain"])
    assert np.isclose(report["general"]["tokens_per_word"], report["domain"]["tokens_per_word"], rtol=0.05)
