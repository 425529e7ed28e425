"""Property tests for the seeded, pure masking functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_adapt.data.masking import IGNORE_INDEX, MaskingVocab, apply_masks, choose_tokens, choose_words, mask_batch
from mlm_adapt.data.seeding import Salt, generator

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
    first = mask_batch(ids, words, scheme=scheme, prob=0.3, vocab=VOCAB, rng=generator(seed, Salt.TRAIN_MASKS, 0, 5))
    second = mask_batch(ids, words, scheme=scheme, prob=0.3, vocab=VOCAB, rng=generator(seed, Salt.TRAIN_MASKS, 0, 5))
    assert all((a == b).all() for a, b in zip(first, second))
    assert (ids == before).all()


def test_different_steps_draw_different_masks():
    ids, words = _batch(0)
    a = mask_batch(ids, words, scheme="token", prob=0.3, vocab=VOCAB, rng=generator(1, Salt.TRAIN_MASKS, 0, 0))[1]
    b = mask_batch(ids, words, scheme="token", prob=0.3, vocab=VOCAB, rng=generator(1, Salt.TRAIN_MASKS, 0, 1))[1]
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


def _word_groups(tokenizer, chunks):
    """(row, word id) -> that word's token strings, in order, from real chunks."""
    groups: dict[tuple[int, int], list[str]] = {}
    for row in range(len(chunks)):
        tokens = tokenizer.convert_ids_to_tokens(chunks.input_ids[row].tolist())
        for token, word in zip(tokens, chunks.word_ids[row].tolist()):
            if word >= 0:
                groups.setdefault((row, word), []).append(token)
    return groups


@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir"])
def test_whole_word_masking_keeps_real_words_whole(request, data_root, model):
    from transformers import AutoTokenizer

    from mlm_adapt.config import DataConfig
    from mlm_adapt.data.splits import load_split

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(model))
    chunks = load_split(DataConfig(data=str(data_root / "docs.txt"), chunk_size=40, eval_size=20), tok, 0, 128).eval
    groups = _word_groups(tok, chunks)
    if model == "bert_dir":
        # A "##" piece continues its word: it never starts a group (but a chunk may begin
        # inside a word), and every group's pieces after the first are "##" pieces.
        assert any(len(g) > 1 for g in groups.values())
        first_words = {(row, chunks.word_ids[row][1]) for row in range(len(chunks))}
        assert all(key in first_words or not g[0].startswith("##") for key, g in groups.items())
        assert all(all(p.startswith("##") for p in g[1:]) for g in groups.values())
    else:
        # Byte-level BPE: only a group's first piece may carry the word's leading space (Ġ),
        # and a group of letters is never followed by a group continuing those letters.
        assert any(len(g) > 1 for g in groups.values())
        assert all(not any(p.startswith("Ġ") for p in g[1:]) for g in groups.values())
        keys = sorted(groups)
        for (row, word), (next_row, _) in zip(keys, keys[1:]):
            following = groups[(next_row, word + 1)] if (next_row, word + 1) in groups else None
            if row == next_row and following and groups[(row, word)][-1][-1].isalpha():
                assert following[0].startswith("Ġ") or not following[0][0].isalpha(), (groups[(row, word)], following)
    inputs, labels = mask_batch(chunks.input_ids, chunks.word_ids, scheme="whole-word", prob=0.3,
                                vocab=MaskingVocab.from_tokenizer(tok), rng=np.random.default_rng(1))
    chosen = labels != IGNORE_INDEX
    for row, word in groups:
        in_word = chosen[row][chunks.word_ids[row] == word]
        assert in_word.all() or not in_word.any()
    assert 0.15 < chosen[chunks.word_ids >= 0].mean() < 0.45


@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir"])
def test_no_word_spans_two_documents(request, model):
    from transformers import AutoTokenizer

    from mlm_adapt.data.chunking import chunk_documents
    from mlm_adapt.data.tokenization import TextEncoder

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(model))
    # Documents that end and begin with letters: only the document boundary separates the words.
    tokens = TextEncoder.from_tokenizer(tok).encode(["the good film", "movie was great", "plot"] * 10)
    chunks = chunk_documents(tokens, np.arange(tokens.num_documents), 32, tok, "pad")
    sep = tok.sep_token_id
    for row in range(len(chunks)):
        ids, words = chunks.input_ids[row], chunks.word_ids[row]
        for i in np.nonzero(ids == sep)[0]:
            assert words[i] == -1
            if 0 < i < len(ids) - 1 and words[i - 1] >= 0 and words[i + 1] >= 0:
                assert words[i - 1] != words[i + 1]
    _, labels = mask_batch(chunks.input_ids, chunks.word_ids, scheme="whole-word", prob=0.5,
                           vocab=MaskingVocab.from_tokenizer(tok), rng=np.random.default_rng(2))
    assert (labels[chunks.input_ids == sep] == IGNORE_INDEX).all()
