"""Attention masks and position ids for chunks, as the models take them.

With ``--packing`` a chunk holds several documents ("[CLS] doc SEP doc SEP ..."):
:func:`document_attention_mask` keeps each token to its own document and
:func:`document_position_ids` restarts positions at each one, so a document is
read as it would be alone. Masks are additive and 4D, which transformers uses as
given (for a 0/1 padding mask it first checks ``mask.all()``: a host sync on a GPU).
"""

from __future__ import annotations

import numpy as np
import torch

# Added to the attention scores a token may not see: fp16's lowest finite value, so the mask
# stays finite in fp16, bf16 and fp32 alike (a row with nothing to see, a pad's, then
# averages uniformly instead of turning into NaN).
BLOCKED = torch.finfo(torch.float16).min


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """0 where ``allowed``, BLOCKED elsewhere, in the autocast dtype: a float32 mask would
    promote bf16 attention scores to float32."""
    device = allowed.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    # masked_fill with a Python number fills on the device; torch.tensor(BLOCKED, device=...)
    # would be a blocking host-to-GPU copy on every forward.
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, BLOCKED)


def padding_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The additive [batch, 1, 1, length] form of a 0/1 padding mask. transformers takes a
    4D mask as it is; given the 0/1 mask it checks ``mask.all()`` first, a host sync on a GPU."""
    return _additive(attention_mask.bool()[:, None, None, :])


def document_attention_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, separator: int) -> torch.Tensor:
    """Additive [batch, 1, length, length] mask letting each token attend only to the real
    tokens of its own document (``--packing``). Chunks hold "[CLS] doc SEP doc SEP ...":
    a document ends at its ``separator``, which belongs to it. (A literal separator token
    typed in a text also ends its document there.)"""
    document = _document_numbers(input_ids, separator)
    allowed = document[:, :, None] == document[:, None, :]
    if attention_mask is not None:
        allowed &= attention_mask.bool()[:, None, :]
    return _additive(allowed)[:, None]


def _document_numbers(input_ids: torch.Tensor, separator: int) -> torch.Tensor:
    """Each token's document number within its chunk: a separator ends (and belongs to) its document."""
    ends = (input_ids == separator).long()
    return torch.cumsum(ends, dim=1) - ends


def _document_starts(input_ids: torch.Tensor, separator: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's document number, and the index its document starts at."""
    starts = torch.ones_like(input_ids, dtype=torch.long)
    starts[:, 1:] = (input_ids[:, :-1] == separator).long()
    index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return _document_numbers(input_ids, separator), torch.cummax(index * starts, dim=1).values


def document_position_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, separator: int,
                          offset: int = 0, pad_position: int = 0) -> torch.Tensor:
    """Position ids that restart with each document of a packed chunk (``--packing``), so
    each document sits at the positions it has when the model reads it alone: the first
    ("[CLS] doc SEP") from 0, the others from 1, as if after their own [CLS]. ``offset``:
    the family's first position (RoBERTa's is pad id + 1); padding gets ``pad_position``."""
    document, start = _document_starts(input_ids, separator)
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    positions = index - start + (document > 0).long() + offset
    if attention_mask is None:
        return positions
    return torch.where(attention_mask.bool(), positions, torch.full_like(positions, pad_position))


def sequence_bounds(input_ids: np.ndarray, attention_mask: np.ndarray | None, separator: int) -> tuple[np.ndarray, int]:
    """The varlen form of a packed batch (``--packing`` with FlashAttention on a GPU): the
    batch flattened into one row, cut into its documents. Returns ``cu_seq_lens`` (int32
    offsets of each segment's start, then the total) and the longest segment's length.

    The documents are :func:`document_attention_mask`'s: a separator ends (and belongs to)
    its document; a row's padding is one segment of its own, whose outputs nobody reads.
    Computed on the host from the batch's arrays: the max length a varlen kernel needs
    would otherwise be a host sync. Boundaries are given, never inferred from position
    ids: later documents restart at position 1 (after their own [CLS]), so inference from
    positions would merge them."""
    batch, length = input_ids.shape
    real = np.full(batch, length) if attention_mask is None else attention_mask.sum(axis=1)
    index = np.arange(length)
    after_separator = np.zeros_like(input_ids, dtype=bool)
    after_separator[:, 1:] = input_ids[:, :-1] == separator
    starts = (index[None, :] == 0) | (after_separator & (index[None, :] < real[:, None])) | (index[None, :] == real[:, None])
    flat = np.flatnonzero(starts)
    bounds = np.append(flat, batch * length).astype(np.int32)
    return bounds, int(np.diff(bounds).max())
