"""The encoder's last layer run only where the loss reads it.

The masked-LM loss reads the last hidden state at the masked positions only (~15%,
``models.masked_lm_nll``). In a post-LayerNorm encoder (BERT, RoBERTa, DistilBERT)
a position's last-layer output depends on every position through attention's keys
and values, but its query and everything after attention (the output projection,
the residual LayerNorms, the feed-forward block) are per position. So the last
layer's keys and values are computed at all positions, and its queries, attention
products and position-wise part at the predicted rows only (queries on the rows on
CPUs only: :func:`queries_on_rows`): the same numbers at those rows (dropout draws
fewer masks), in ~10% fewer FLOPs for a 6-layer DistilBERT step and ~5% for a
12-layer BERT (docs/performance.md).

The encoder runs as transformers wrote it, with the last layer's forward swapped
for the identity for that one call (so its input comes out as the "last hidden
state"); :func:`tail` then calls the layer's own projections, its model's attention
function (eager, SDPA or cpu_dropout's), dropout and masks. Anything else
(ModernBERT's pre-LayerNorm layers, a wrapped or compiled encoder, decoders) keeps
the full layer.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Post-LayerNorm layer classes (BERT's layout; RoBERTa, XLM-R and CamemBERT copy it)
# and DistilBERT's. An exact type match: a sharded wrapper (FSDP's FSDP<Layer>) or a
# subclass may behave differently and keeps the full layer.
_BERT_LAYERS = {"BertLayer", "RobertaLayer", "XLMRobertaLayer", "CamembertLayer"}
_DISTILBERT_LAYERS = {"TransformerBlock"}
# Queries per chunk rounded up to a multiple of this: with the exact count (a new size
# most steps) a DistilBERT step's peak RSS grew 2.46 -> 2.88 GB over 120 steps; with 8 it
# stayed at 2.46-2.53 GB (docs/performance.md). The padding queries read position 0.
QUERY_BUCKET = 8
_CROSS_ATTENTION = {"encoder_hidden_states", "encoder_attention_mask", "past_key_values"}


def trimmable(encoder: torch.nn.Module) -> torch.nn.Module | None:
    """The encoder's last layer when :func:`tail` knows its layout, else None."""
    if getattr(encoder, "_compiled_call_impl", None) is not None:
        return None  # a compiled graph would be traced with (and guard on) the swapped forward
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)  # BERT, RoBERTa
    if stack is None:
        stack = getattr(getattr(encoder, "transformer", None), "layer", None)  # DistilBERT
    if not isinstance(stack, torch.nn.ModuleList) or len(stack) == 0:
        return None
    layer = stack[-1]
    name = type(layer).__name__
    if name in _BERT_LAYERS and not getattr(layer, "add_cross_attention", False) and not layer.is_decoder:
        return layer
    return layer if name in _DISTILBERT_LAYERS else None


@contextmanager
def skipped(layer: torch.nn.Module) -> Iterator[dict]:
    """Within the block, ``layer`` returns its input unchanged; the dict it yields
    receives the attention mask and keyword arguments the encoder called it with."""
    call: dict = {}

    def identity(hidden_states, attention_mask=None, *args, **kwargs):
        call.update(attention_mask=attention_mask, kwargs=kwargs)
        return hidden_states

    layer.forward = identity  # an instance attribute: shadows the class's forward, not in the state dict
    try:
        yield call
    finally:
        del layer.forward


def tail(layer: torch.nn.Module, hidden: torch.Tensor, rows: torch.Tensor, call: dict, count: int | None = None) -> torch.Tensor:
    """``layer``'s output at the flat positions ``rows`` of ``hidden`` ([batch, length,
    width], the layer's input), as [len(rows), width]. The first ``count`` rows (all by
    default) are distinct; any after them are padding whose outputs the caller ignores."""
    mask = call["attention_mask"]
    kwargs = {k: v for k, v in call["kwargs"].items() if k not in _CROSS_ATTENTION}
    width = hidden.shape[-1]
    at_rows = hidden.reshape(-1, width)[rows]
    distilbert = type(layer).__name__ in _DISTILBERT_LAYERS
    self_attention = layer.attention if distilbert else layer.attention.self
    if queries_on_rows(hidden.device):
        context = _context_at(self_attention, hidden, rows, rows.numel() if count is None else count, mask, kwargs)
    else:
        context = _all_queries(self_attention, hidden, mask, kwargs).reshape(-1, width)[rows]
    if distilbert:
        x = layer.sa_layer_norm(self_attention.out_lin(context) + at_rows)
        # ff_chunk: FFN's forward would chunk a [rows, width] input along width (chunk_size_feed_forward)
        return layer.output_layer_norm(layer.ffn.ff_chunk(x) + x)
    x = layer.attention.output(context, at_rows)
    return layer.output(layer.intermediate(x), x)


def queries_on_rows(device: torch.device) -> bool:
    """Whether the last layer's attention takes queries at the predicted rows only: on
    CPUs. Stacking them per chunk needs each chunk's row count on the host, a sync in the
    middle of the forward on an accelerator, where all-position queries cost little."""
    return device.type == "cpu"


def _projections(attention: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    if hasattr(attention, "q_lin"):  # DistilBERT
        return attention.q_lin, attention.k_lin, attention.v_lin
    return attention.query, attention.key, attention.value


def _attend(attention, query, key, value, mask, kwargs) -> torch.Tensor:
    """What the module's own forward does between its projections, as [batch, queries, width]:
    its model's attention function, dropout and scaling."""
    eager = sys.modules[type(attention).__module__].eager_attention_forward
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    dropout = attention.dropout.p if attention.training else 0.0
    out, _ = interface(attention, query, key, value, mask, dropout=dropout, scaling=attention.scaling, **kwargs)
    return out.flatten(2)  # [batch, queries, heads, head size] -> [batch, queries, width]


def _heads(x: torch.Tensor, size: int) -> torch.Tensor:
    return x.view(*x.shape[:2], x.shape[-1] // size, size).transpose(1, 2)  # not -1: no queries is a shape too


def _all_queries(attention, hidden, mask, kwargs) -> torch.Tensor:
    size = attention.attention_head_size
    query, key, value = (_heads(linear(hidden), size) for linear in _projections(attention))
    return _attend(attention, query, key, value, mask, kwargs)


def _context_at(attention, hidden, rows, count, mask, kwargs) -> torch.Tensor:
    """Self-attention's context vectors (before the output projection) at ``rows``, with
    queries at ``rows[:count]`` only: each chunk's queries stacked, padded to the most any
    chunk has (rounded up to QUERY_BUCKET), against all of its keys and values (~15% of the
    queries, so the last layer's query projection and attention products shrink as its
    feed-forward did)."""
    batch, length, _ = hidden.shape
    chunk = torch.div(rows[:count], length, rounding_mode="floor")
    sizes = torch.bincount(chunk, minlength=batch)
    order = torch.argsort(chunk, stable=True)
    slot = torch.empty_like(chunk)
    slot[order] = torch.arange(count, device=rows.device) - (torch.cumsum(sizes, 0) - sizes)[chunk[order]]
    depth = -(-int(sizes.max()) // QUERY_BUCKET) * QUERY_BUCKET  # a host sync: fine on a CPU (see tail)
    grid = rows.new_zeros(batch, depth)
    grid[chunk, slot] = rows[:count] % length
    q_lin, k_lin, v_lin = _projections(attention)
    size = attention.attention_head_size
    query = _heads(q_lin(hidden.gather(1, grid.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))), size)
    if mask is not None and mask.dim() == 4 and mask.shape[2] > 1:  # a mask per query (--packing): the rows'
        mask = mask.gather(2, grid[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
    context = _attend(attention, query, _heads(k_lin(hidden), size), _heads(v_lin(hidden), size), mask, kwargs)
    padding = context.new_zeros(rows.numel() - count, context.shape[-1])
    return torch.cat([context[chunk, slot], padding])
