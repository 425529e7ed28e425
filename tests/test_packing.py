"""Packed chunks' attention masks and position ids (pure functions, property-tested)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st


@given(layout=st.lists(st.integers(0, 6), min_size=1, max_size=5), pad=st.integers(0, 4))
def test_packing_mask_lets_a_token_see_exactly_the_real_tokens_of_its_document(layout, pad):
    from mlm_adapt.packing import BLOCKED, document_attention_mask

    sep = 2
    ids, owner = [1], [0]  # [CLS] belongs to the first document
    for doc, length in enumerate(layout):
        ids += [7] * length + [sep]
        owner += [doc] * (length + 1)  # its separator ends (and belongs to) the document
    real = len(ids)
    ids += [0] * pad
    mask = document_attention_mask(torch.tensor([ids]), torch.tensor([[1] * real + [0] * pad]), sep)[0, 0]
    for i in range(real):
        for j in range(len(ids)):
            visible = j < real and owner[i] == owner[j]
            assert mask[i, j].item() == (0.0 if visible else BLOCKED)


@given(layout=st.lists(st.integers(0, 6), min_size=1, max_size=5), pad=st.integers(0, 4),
       numbering=st.sampled_from([(0, 0), (2, 1)]))
def test_packed_positions_restart_with_each_document(layout, pad, numbering):
    from mlm_adapt.packing import document_position_ids

    sep, (offset, pad_position) = 2, numbering
    ids, expected = [1], [offset]  # [CLS] at the first position
    for length in layout:
        ids += [7] * length + [sep]
        # As read alone: the first document after its [CLS], the others as if after theirs.
        expected += [offset + 1 + k for k in range(length + 1)]
    expected += [pad_position] * pad
    attention = torch.tensor([[1] * (len(ids)) + [0] * pad])
    ids += [0] * pad
    got = document_position_ids(torch.tensor([ids]), attention, sep, offset, pad_position)
    assert got[0].tolist() == expected
