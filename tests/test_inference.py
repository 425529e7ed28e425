"""Fill-mask: mask spellings, token text without tokenizer markers, two models side by side."""

from __future__ import annotations

import pytest

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.inference import fill_mask, with_model_mask


def test_either_mask_spelling_becomes_the_models_own():
    assert with_model_mask("a [MASK] and a <mask>.", "<mask>") == "a <mask> and a <mask>."
    with pytest.raises(MlmAdaptError, match="no \\[MASK\\] or <mask>"):
        with_model_mask("nothing to fill", "[MASK]")


@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir"])
def test_predicted_tokens_are_plain_text(request, model):
    # Byte-level BPE stores a word's leading space as "Ġ": a person reads the word, not the
    # vocabulary entry.
    predictions = fill_mask(str(request.getfixturevalue(model)), ["the good [MASK] loved the film.", "a <mask> plot."], top_k=8)
    assert [len(p) for p in predictions] == [1, 1]
    tokens = [p.token for text in predictions for mask in text for p in mask]
    assert len(tokens) == 16 and not any("Ġ" in t or t != t.strip() for t in tokens)
    for text in predictions:
        scores = [p.score for p in text[0]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
