"""Fill-mask: mask spellings, token text without tokenizer markers, two models side by side."""

from __future__ import annotations

import pytest
import torch

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation.inference import fill_mask, with_model_mask


def test_either_mask_spelling_becomes_the_models_own():
    assert with_model_mask("a [MASK] and a <mask>.", "<mask>") == "a <mask> and a <mask>."
    with pytest.raises(MlmAdaptError, match="no \\[MASK\\] or <mask>"):
        with_model_mask("nothing to fill", "[MASK]")


@pytest.fixture(scope="module")
def roberta_word_initial(roberta_dir, tmp_path_factory):
    """The tiny RoBERTa with its output bias raised on word-initial ("Ġ...") entries, so that
    its top predictions are such entries: the random model alone rarely predicts one."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("roberta-word-initial")
    model, tokenizer = AutoModelForMaskedLM.from_pretrained(roberta_dir), AutoTokenizer.from_pretrained(roberta_dir)
    vocab = tokenizer.get_vocab()
    with torch.no_grad():
        for entry, index in vocab.items():
            if entry.startswith("Ġ") and len(entry) > 1:
                model.lm_head.bias[index] += 20.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir", "roberta_word_initial"])
def test_predicted_tokens_are_plain_text(request, model):
    # Byte-level BPE stores a word's leading space as "Ġ": a person reads the word, not the
    # vocabulary entry.
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(model)
    predictions = fill_mask(str(folder), ["the good [MASK] loved the film.", "a <mask> plot."], top_k=8)
    assert [len(p) for p in predictions] == [1, 1]
    tokens = [p.token for text in predictions for mask in text for p in mask]
    assert len(tokens) == 16 and not any("Ġ" in t or t != t.strip() for t in tokens)
    if model == "roberta_word_initial":  # the case the test is for: entries that do start with "Ġ"
        vocab = AutoTokenizer.from_pretrained(folder).get_vocab()
        assert all("Ġ" + t in vocab for t in tokens), tokens
    for text in predictions:
        scores = [p.score for p in text[0]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
