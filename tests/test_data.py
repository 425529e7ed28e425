"""The data boundary: replaying general text into the training set (--replay-ratio)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mlm_adapt.data.chunking import Chunks
from mlm_adapt.data.splits import InMemorySource, SplitData, with_replay


def _chunks(first_id: int, rows: int, width: int = 6) -> Chunks:
    ids = np.arange(first_id, first_id + rows * width, dtype=np.int64).reshape(rows, width)
    return Chunks(ids, np.ones_like(ids), np.zeros_like(ids))


def _split(train: Chunks, held_out: Chunks) -> SplitData:
    return SplitData(InMemorySource(train, documents=len(train)), held_out, eval_documents=len(held_out))


@given(domain=st.integers(1, 60), pool=st.integers(1, 200), ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_replay_keeps_every_domain_chunk_and_adds_the_share_from_general_training_chunks(domain, pool, ratio, seed):
    own, general_train, general_held_out = _chunks(0, domain), _chunks(10_000, pool), _chunks(90_000, 5)
    mixed = with_replay(_split(own, _chunks(50_000, 3)), _split(general_train, general_held_out), ratio, seed)
    rows = {tuple(r) for r in mixed.train.chunks.input_ids}
    assert {tuple(r) for r in own.input_ids} <= rows
    replayed = rows - {tuple(r) for r in own.input_ids}
    assert replayed <= {tuple(r) for r in general_train.input_ids}  # never a held-out general chunk
    assert len(replayed) == mixed.replay_chunks == min(round(ratio / (1 - ratio) * domain), pool)
    assert mixed.eval is not None and mixed.train.documents == domain  # held-out side and counts untouched


def test_replay_is_seeded():
    domain, general = _split(_chunks(0, 20), _chunks(500, 2)), _split(_chunks(10_000, 100), _chunks(90_000, 2))
    first, again = with_replay(domain, general, 0.3, 1), with_replay(domain, general, 0.3, 1)
    other = with_replay(domain, general, 0.3, 2)
    assert (first.train.chunks.input_ids == again.train.chunks.input_ids).all()
    assert (first.train.chunks.input_ids != other.train.chunks.input_ids).any()


def test_replay_warns_and_uses_all_when_general_text_is_short(mlm_log):
    mixed = with_replay(_split(_chunks(0, 30), _chunks(500, 2)), _split(_chunks(10_000, 4), _chunks(90_000, 2)), 0.5, 0)
    assert mixed.replay_chunks == 4 and "wants 30 general-text chunks" in mlm_log.text
