"""Packed chunks' attention masks and position ids (pure functions, property-tested)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st


@given(layout=st.lists(st.integers(0, 6), min_size=1, max_size=5), pad=st.integers(0, 4))
def test_packing_mask_lets_a_token_see_exactly_the_real_tokens_of_its_document(layout, pad):
    from mlm_adapt.data.packing import BLOCKED, document_attention_mask

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
    from mlm_adapt.data.packing import document_position_ids

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



@given(rows=st.lists(st.lists(st.integers(3, 9), min_size=0, max_size=4), min_size=1, max_size=4),
       padding=st.lists(st.integers(0, 5), min_size=4, max_size=4), length=st.integers(12, 30))
@settings(max_examples=200, deadline=None)
def test_sequence_bounds_cut_a_packed_batch_where_the_document_mask_does(rows, padding, length):
    import numpy as np

    from mlm_adapt.data.packing import document_attention_mask, sequence_bounds

    separator, pad = 2, 0
    ids = np.full((len(rows), length), pad, dtype=np.int64)
    attention = np.zeros((len(rows), length), dtype=np.int64)
    for r, docs in enumerate(rows):
        tokens = [1]  # [CLS]
        for size in docs:
            tokens += [5] * size + [separator]
        tokens = tokens[: length - padding[r]] if padding[r] else tokens[:length]
        ids[r, : len(tokens)], attention[r, : len(tokens)] = tokens, 1
    bounds, longest = sequence_bounds(ids, attention, separator)
    assert bounds.dtype == np.int32 and bounds[0] == 0 and bounds[-1] == ids.size
    assert longest == np.diff(bounds).max() and (np.diff(bounds) > 0).all()
    # Brute force: two real tokens of a row share a segment exactly when the 4-D mask lets them see each other.
    segment = np.searchsorted(bounds, np.arange(ids.size), side="right").reshape(ids.shape)
    allowed = document_attention_mask(torch.from_numpy(ids), torch.from_numpy(attention), separator)[:, 0] == 0
    for r in range(len(rows)):
        real = np.flatnonzero(attention[r])
        same = segment[r][real][:, None] == segment[r][real][None, :]
        assert (same == allowed[r][np.ix_(real, real)].numpy()).all()
        assert len(set(segment[r][attention[r] == 0])) <= 1  # the padding, one segment
        assert not set(segment[r][attention[r] == 0]) & set(segment[r][real])


def _varlen_reference(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """What FlashAttention's varlen kernel computes, on the CPU: each segment attends to itself."""
    assert attention_mask is None and cu_seq_lens_q is not None and query.shape[0] == 1
    bounds = cu_seq_lens_q.tolist()
    assert max_length_q == max(b - a for a, b in zip(bounds, bounds[1:]))
    out = torch.zeros_like(query)
    for start, end in zip(bounds, bounds[1:]):
        out[:, :, start:end] = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], scale=scaling)
    return out.transpose(1, 2).contiguous(), None


@pytest.mark.parametrize("model_fixture", ["bert_dir", "roberta_dir"])
def test_packed_batches_through_a_varlen_attention_equal_the_4d_mask(request, model_fixture, monkeypatch):
    """The GPU's --packing path (FlashAttention varlen, flattened batch, cu_seq_lens) checked on
    the CPU with a reference varlen function: the same losses as the per-document 4-D mask."""
    import numpy as np
    from transformers import AttentionInterface, AutoModelForMaskedLM, AutoTokenizer

    from mlm_adapt.modeling import objective
    from mlm_adapt.modeling.objective import device_batch
    from mlm_adapt.speed import last_layer

    folder = request.getfixturevalue(model_fixture)
    AttentionInterface.register("varlen_reference", _varlen_reference)
    monkeypatch.setattr(objective, "VARLEN_ATTENTION", {"varlen_reference"})
    monkeypatch.setattr(last_layer, "queries_on_rows", lambda device: False)  # the GPU's branch
    separator = AutoTokenizer.from_pretrained(folder).sep_token_id
    varlen = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="varlen_reference").eval()
    masked = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    rng = np.random.default_rng(3)
    ids = rng.integers(5, varlen.config.vocab_size, (3, 40))
    ids[:, 0] = 0
    ids[0, [9, 20]] = separator
    ids[1, 14] = separator
    attention = np.ones_like(ids)
    attention[1, 30:] = 0
    ids[1, 30:] = varlen.config.pad_token_id
    labels = np.where((rng.random(ids.shape) < 0.3) & (attention == 1), ids, -100)
    one = objective.MaskedLMObjective(varlen, separator=separator)
    assert one.varlen_separator == separator
    batch = device_batch((ids, attention, labels), torch.device("cpu"), one.varlen_separator)
    assert "bounds" in batch and batch["longest"] == 40  # row 2 is one document
    with torch.no_grad():
        got, count = one(**batch, per_token=True)
        expected, count_expected = objective.MaskedLMObjective(masked, separator=separator)(
            **device_batch((ids, attention, labels), torch.device("cpu")), per_token=True)
        summed, _ = one(**batch)
    assert count == count_expected and got.shape == ids.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(summed, expected.sum(), atol=1e-4, rtol=1e-5)
