"""Chunking preserves text, holds out whole documents, and is vectorised."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FrameTokenizer, synthetic_tokens
from mlm_adapt.config import DataConfig
from mlm_adapt.data.chunking import NO_WORD, TokenizedCorpus, choose_rows, chunk_documents, count_chunks, split_and_chunk, split_documents
from mlm_adapt.data.seeding import Salt
from mlm_adapt.errors import MlmAdaptError

docs_strategy = st.lists(st.integers(1, 60), min_size=1, max_size=30)


@given(lengths=docs_strategy, chunk=st.integers(4, 40), remainder=st.sampled_from(["drop", "pad"]))
@settings(max_examples=80, deadline=None)
def test_chunking_preserves_every_token_in_order(lengths, chunk, remainder):
    tokens = synthetic_tokens(lengths)
    docs = np.arange(len(lengths))
    chunks = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder)
    assert chunks.input_ids.shape[1] == chunk
    assert (chunks.input_ids[:, 0] == FrameTokenizer.cls_token_id).all()
    body = chunks.input_ids[:, 1:-1][chunks.attention_mask[:, 1:-1] == 1]
    if remainder == "pad" and len(chunks):
        last = chunks.attention_mask[-1].sum()
        body = np.concatenate([chunks.input_ids[:-1, 1:-1].reshape(-1), chunks.input_ids[-1, 1 : last - 1]])
    stream = []
    for i, d in enumerate(docs):
        stream.extend(tokens.ids[tokens.offsets[d] : tokens.offsets[d + 1]].tolist())
        if i < len(docs) - 1:
            stream.append(FrameTokenizer.sep_token_id)
    expected = stream if remainder == "pad" else stream[: len(stream) // (chunk - 2) * (chunk - 2)]
    assert body.tolist() == expected


@given(lengths=docs_strategy, chunk=st.integers(4, 40))
@settings(max_examples=50, deadline=None)
def test_word_ids_mark_specials_and_follow_word_starts(lengths, chunk):
    tokens = synthetic_tokens(lengths, seed=1)
    chunks = chunk_documents(tokens, np.arange(len(lengths)), chunk, FrameTokenizer, "pad")
    special = chunks.input_ids <= 2
    assert ((chunks.word_ids == NO_WORD) == special).all()
    for row in chunks.word_ids:
        words = row[row != NO_WORD]
        assert (np.diff(words) >= 0).all()  # words never interleave


def test_pad_keeps_a_short_remainder_and_drop_discards_it():
    tokens = synthetic_tokens([10])
    drop = chunk_documents(tokens, np.array([0]), 8, FrameTokenizer, "drop")
    pad = chunk_documents(tokens, np.array([0]), 8, FrameTokenizer, "pad")
    assert len(drop) == 1 and len(pad) == 2
    assert pad.attention_mask[-1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert pad.input_ids[-1].tolist()[5:] == [FrameTokenizer.sep_token_id, 0, 0]


@given(lengths=st.lists(st.integers(1, 100), min_size=2, max_size=200), target=st.integers(1, 5000), seed=st.integers(0, 999))
@settings(max_examples=80, deadline=None)
def test_split_is_a_seeded_partition_of_documents(lengths, target, seed):
    lengths = np.array(lengths)
    train, held = split_documents(lengths, target, seed)
    assert len(held) >= 1 and len(train) >= 1
    assert not set(train) & set(held)
    assert sorted(set(train) | set(held)) == list(range(len(lengths)))
    again = split_documents(lengths, target, seed)
    assert (again[0] == train).all() and (again[1] == held).all()
    assert len(held) <= max(1, int(len(lengths) * 0.1))


def test_single_document_cannot_be_split():
    with pytest.raises(MlmAdaptError, match="single document"):
        split_documents(np.array([500]), 100, 0)


def test_choose_rows_is_seeded_and_ordered():
    a, b = choose_rows(100, 10, 3, Salt.TRAIN_ROWS), choose_rows(100, 10, 3, Salt.TRAIN_ROWS)
    assert len(a) == 10 and (a == b).all() and (np.diff(a) > 0).all()
    assert (choose_rows(100, 10, 3, Salt.EVAL_ROWS) != a).any()
    assert (choose_rows(5, 10, 3, Salt.TRAIN_ROWS) == np.arange(5)).all()
    assert (choose_rows(5, None, 3, Salt.TRAIN_ROWS) == np.arange(5)).all()


@given(lengths=docs_strategy, chunk=st.integers(4, 40), remainder=st.sampled_from(["drop", "pad"]), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_building_some_rows_equals_selecting_them_from_all(lengths, chunk, remainder, seed):
    tokens = synthetic_tokens(lengths, seed=2)
    docs = np.arange(len(lengths))
    every = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder)
    assert len(every) == count_chunks(tokens, docs, chunk, remainder)
    rows = choose_rows(len(every), max(1, len(every) // 3), seed, Salt.TRAIN_ROWS)
    some = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder, rows)
    picked = every.select(rows)
    assert (some.input_ids == picked.input_ids).all() and (some.attention_mask == picked.attention_mask).all()
    assert ((some.word_ids == NO_WORD) == (picked.word_ids == NO_WORD)).all()


@given(lengths=docs_strategy, chunk=st.integers(4, 40), remainder=st.sampled_from(["drop", "pad"]), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_each_position_names_its_document(lengths, chunk, remainder, seed):
    from mlm_adapt.data.chunking import NO_DOCUMENT
    from mlm_adapt.data.tokenization import TokenizedCorpus

    # Every token of document d has id 10 + d, so a chunk's tokens say whose they are.
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32) + 10
    tokens = TokenizedCorpus(ids, np.ones(len(ids), bool), np.zeros(len(ids), bool), offsets)
    docs = np.flatnonzero(np.random.default_rng(seed).random(len(lengths)) < 0.7)
    chunks = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder, with_documents=True)
    assert chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder).documents is None  # training chunks
    if not len(chunks):
        return
    assert (chunks.documents[:, [0, -1]] == NO_DOCUMENT).all()  # CLS and the closing SEP
    body = chunks.documents[:, 1:-1]
    assert np.isin(body, docs).all() and (np.diff(body.reshape(-1)) >= 0).all()
    expected = np.where(chunks.input_ids[:, 1:-1] >= 10, chunks.input_ids[:, 1:-1] - 10, -1)
    assert (body[expected >= 0] == expected[expected >= 0]).all()  # every token's own document
    # The document at the middle of each body, as chunks were counted for before pieces.
    middle = (chunk - 2) // 2
    for row, document in zip(chunks.input_ids[:, 1:-1], body[:, middle]):
        token = row[middle]
        if token == FrameTokenizer.sep_token_id:  # the separator ending a document belongs to it
            token = row[middle - 1]
        expected = token - 10 if token >= 10 else docs[-1]  # past the end (--remainder pad): the last
        assert document == expected
    # Selecting rows keeps their documents.
    rows = np.arange(0, len(chunks), 2)
    assert (chunks.select(rows).documents == chunks.documents[rows]).all()



@given(lengths=docs_strategy, chunk=st.integers(4, 40), remainder=st.sampled_from(["drop", "pad"]), seed=st.integers(0, 99))
@settings(max_examples=80, deadline=None)
def test_words_cut_by_a_chunks_edges_are_marked(lengths, chunk, remainder, seed):
    tokens = synthetic_tokens(lengths, seed=seed)
    docs = np.arange(len(lengths))
    chunks = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder, with_documents=True)
    assert chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder).cut is None  # training chunks
    # The oracle: the stream "doc SEP doc ..." as words (a separator is a word of its own);
    # a token is cut when its word reaches past its chunk's body on either side.
    starts, special = [], []
    for i, d in enumerate(docs):
        starts.extend(tokens.word_starts[tokens.offsets[d]:tokens.offsets[d + 1]].tolist())
        special.extend([False] * int(tokens.offsets[d + 1] - tokens.offsets[d]))
        if i < len(docs) - 1:
            starts.append(True)
            special.append(True)
    word = np.cumsum(starts)
    first = {w: np.flatnonzero(word == w).min() for w in np.unique(word)}
    last = {w: np.flatnonzero(word == w).max() for w in np.unique(word)}
    body = chunk - 2
    for row in range(len(chunks)):
        for j in range(body):
            p = row * body + j
            expected = p < len(word) and not special[p] and (first[word[p]] < row * body or last[word[p]] >= (row + 1) * body)
            assert chunks.cut[row, j + 1] == expected, (row, j)
    assert not chunks.cut[:, [0, -1]].any()
    rows = np.arange(0, len(chunks), 2)
    assert (chunks.select(rows).cut == chunks.cut[rows]).all()  # selecting rows keeps them

@given(lengths=docs_strategy, chunk=st.integers(4, 40), remainder=st.sampled_from(["drop", "pad"]),
       block=st.integers(1, 5), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_chunks_built_a_block_of_rows_at_a_time_equal_one_pass(lengths, chunk, remainder, block, seed):
    from mlm_adapt.data import chunking

    tokens = synthetic_tokens(lengths, seed=seed)
    docs = np.flatnonzero(np.random.default_rng(seed).random(len(lengths)) < 0.7)
    one_pass = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder, with_documents=True)
    default, chunking.ROWS_PER_BLOCK = chunking.ROWS_PER_BLOCK, block
    try:
        blocks = chunk_documents(tokens, docs, chunk, FrameTokenizer, remainder, with_documents=True)
    finally:
        chunking.ROWS_PER_BLOCK = default
    for name in ("input_ids", "attention_mask", "word_ids", "documents"):
        assert (getattr(one_pass, name) == getattr(blocks, name)).all(), name


@given(lengths=st.lists(st.integers(1, 80), min_size=2, max_size=120), seed=st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_no_chunk_of_an_eval_document_is_trained_on(lengths, seed):
    # Every token of document d has id 1000 + d, so a chunk's ids name its documents.
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.repeat(1000 + np.arange(len(lengths)), lengths).astype(np.int32)
    tokens = TokenizedCorpus(ids, np.ones(len(ids), dtype=bool), np.zeros(len(ids), dtype=bool), offsets)
    config = DataConfig(data="unused", chunk_size=8, eval_size=5, train_size=None, remainder="pad")
    split = split_and_chunk(tokens, config, FrameTokenizer, seed)
    train_docs = set(split.train.input_ids[split.train.input_ids >= 1000].tolist())
    eval_docs = set(split.eval.input_ids[split.eval.input_ids >= 1000].tolist())
    assert eval_docs and train_docs and not train_docs & eval_docs


def test_corpus_shorter_than_one_chunk_is_refused():
    tokens = synthetic_tokens([3, 3, 3])
    config = DataConfig(data="unused", chunk_size=64, eval_size=5)
    with pytest.raises(MlmAdaptError, match="too short"):
        split_and_chunk(tokens, config, FrameTokenizer, 0)
