"""Property tests for the seeded, pure masking functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_adapt.masking import (
    IGNORE_INDEX,
    MaskingVocab,
    apply_masks,
    batch_generator,
    choose_tokens,
    choose_words,
    mask_batch,
)

VOCAB = MaskingVocab(mask_token_id=4, replacement_ids=np.arange(5, 100))


def _batch(seed: int, rows: int = 8, length: int = 32):
    """Random ids with word structure: -1 words at row ends (CLS/SEP) and random word lengths."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 100, size=(rows, length))
    starts = rng.random((rows, length)) < 0.5
    words = np.cumsum(starts, axis=1)
    words[:, 0] = words[:, -1] = -1
    ids[:, 0], ids[:, -1] = 2, 3
    return ids, words


@given(seed=st.integers(0, 2**32 - 1), scheme=st.sampled_from(["token", "whole-word"]), prob=st.floats(0.01, 0.99))
@settings(max_examples=60, deadline=None)
def test_special_tokens_are_never_masked_and_labels_only_at_chosen(seed, scheme, prob):
    ids, words = _batch(seed)
    inputs, labels = mask_batch(ids, words, scheme=scheme, prob=prob, vocab=VOCAB, rng=np.random.default_rng(seed))
    special = words < 0
    assert (labels[special] == IGNORE_INDEX).all()
    assert (inputs[special] == ids[special]).all()
    chosen = labels != IGNORE_INDEX
    assert (labels[chosen] == ids[chosen]).all()
    assert (inputs[~chosen] == ids[~chosen]).all()


@given(seed=st.integers(0, 2**32 - 1), prob=st.floats(0.05, 0.95))
@settings(max_examples=60, deadline=None)
def test_whole_word_masking_never_splits_a_word(seed, prob):
    ids, words = _batch(seed)
    _, labels = mask_batch(ids, words, scheme="whole-word", prob=prob, vocab=VOCAB, rng=np.random.default_rng(seed))
    chosen = labels != IGNORE_INDEX
    for row in range(len(ids)):
        for word in np.unique(words[row][words[row] >= 0]):
            in_word = chosen[row][words[row] == word]
            assert in_word.all() or not in_word.any()


def test_equal_word_ids_in_different_rows_are_different_words():
    words = np.array([[-1, 7, 7, 7, -1]] * 400)
    chosen = choose_words(words, 0.5, np.random.default_rng(0))
    rows_chosen = chosen[:, 1]
    assert 150 < rows_chosen.sum() < 250  # independent per row, not one draw for all


@given(seed=st.integers(0, 2**32 - 1), scheme=st.sampled_from(["token", "whole-word"]))
@settings(max_examples=30, deadline=None)
def test_same_seed_same_masks_and_input_untouched(seed, scheme):
    ids, words = _batch(seed)
    before = ids.copy()
    first = mask_batch(ids, words, scheme=scheme, prob=0.3, vocab=VOCAB, rng=batch_generator(seed, 1, 0, 5))
    second = mask_batch(ids, words, scheme=scheme, prob=0.3, vocab=VOCAB, rng=batch_generator(seed, 1, 0, 5))
    assert all((a == b).all() for a, b in zip(first, second))
    assert (ids == before).all()


def test_different_steps_draw_different_masks():
    ids, words = _batch(0)
    a = mask_batch(ids, words, scheme="token", prob=0.3, vocab=VOCAB, rng=batch_generator(1, 1, 0, 0))[1]
    b = mask_batch(ids, words, scheme="token", prob=0.3, vocab=VOCAB, rng=batch_generator(1, 1, 0, 1))[1]
    assert (a != b).any()


@pytest.mark.parametrize("prob", [0.15, 0.4])
def test_token_mask_rate_and_80_10_10_split(prob):
    rng = np.random.default_rng(123)
    ids = rng.integers(5, 100, size=(400, 128))
    special = np.zeros(ids.shape, dtype=bool)
    special[:, 0] = special[:, -1] = True
    chosen = choose_tokens(special, prob, rng)
    inputs, labels = apply_masks(ids, chosen, VOCAB, rng)
    rate = chosen.sum() / (~special).sum()
    assert abs(rate - prob) < 0.01
    n = chosen.sum()
    masked = (inputs == VOCAB.mask_token_id) & chosen
    kept = (inputs == ids) & chosen
    assert abs(masked.sum() / n - 0.8) < 0.02
    # A random replacement can draw the original id (1 in 95 here), so "kept" is ~10% + a little.
    assert abs(kept.sum() / n - (0.1 + 0.1 / 95)) < 0.02
    replaced = chosen & ~masked & ~kept
    assert abs(replaced.sum() / n - 0.1 * (1 - 1 / 95)) < 0.02
    assert np.isin(inputs[replaced], VOCAB.replacement_ids).all()


def test_whole_word_rate_is_per_word():
    words = np.tile(np.repeat(np.arange(50), 3), (200, 1))  # 50 words of 3 tokens per row
    chosen = choose_words(words, 0.2, np.random.default_rng(7))
    per_word = chosen[:, ::3]
    assert abs(per_word.mean() - 0.2) < 0.01
    assert (chosen[:, ::3] == chosen[:, 1::3]).all() and (chosen[:, ::3] == chosen[:, 2::3]).all()


def test_replacement_vocab_excludes_special_tokens(bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    vocab = MaskingVocab.from_tokenizer(tok)
    assert vocab.mask_token_id == tok.mask_token_id
    assert not set(tok.all_special_ids) & set(vocab.replacement_ids.tolist())
    assert len(vocab.replacement_ids) == len(tok) - len(set(tok.all_special_ids))
