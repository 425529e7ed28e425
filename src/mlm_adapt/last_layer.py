"""The encoder's last layer run position-wise only on the rows the loss reads.

The masked-LM loss reads the last hidden state at the masked positions only (~15%,
``models.masked_lm_nll``). In a post-LayerNorm encoder (BERT, RoBERTa, DistilBERT)
a position's last-layer output depends on every position through attention's keys
and values, but everything after attention (the output projection, the residual
LayerNorms, the feed-forward block: 2/3 to 3/4 of the layer's matrix FLOPs) is
per position. So the last layer's attention runs on all positions and the rest on
the predicted rows: the same numbers at those rows (dropout draws fewer masks), in
~8% fewer FLOPs for a 6-layer DistilBERT step and ~5% for a 12-layer BERT
(docs/performance.md).

The encoder runs as transformers wrote it, with the last layer's forward swapped
for the identity for that one call (so its input comes out as the "last hidden
state"); :func:`tail` then calls the layer's own submodules, so its attention
implementation, dropout and masks are the model's. Anything else (ModernBERT's
pre-LayerNorm layers, a wrapped or compiled encoder, decoders) keeps the full layer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

# Post-LayerNorm layer classes (BERT's layout; RoBERTa, XLM-R and CamemBERT copy it)
# and DistilBERT's. An exact type match: a sharded wrapper (FSDP's FSDP<Layer>) or a
# subclass may behave differently and keeps the full layer.
_BERT_LAYERS = {"BertLayer", "RobertaLayer", "XLMRobertaLayer", "CamembertLayer"}
_DISTILBERT_LAYERS = {"TransformerBlock"}
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


def tail(layer: torch.nn.Module, hidden: torch.Tensor, rows: torch.Tensor, call: dict) -> torch.Tensor:
    """``layer``'s output at the flat positions ``rows`` of ``hidden`` ([batch, length,
    width], the layer's input), as [len(rows), width]."""
    mask = call["attention_mask"]
    kwargs = {k: v for k, v in call["kwargs"].items() if k not in _CROSS_ATTENTION}
    width = hidden.shape[-1]
    at_rows = hidden.reshape(-1, width)[rows]
    if type(layer).__name__ in _DISTILBERT_LAYERS:
        attended, _ = layer.attention(hidden, attention_mask=mask, **kwargs)  # out_lin included
        x = layer.sa_layer_norm(attended.reshape(-1, width)[rows] + at_rows)
        # ff_chunk: FFN's forward would chunk a [rows, width] input along width (chunk_size_feed_forward)
        return layer.output_layer_norm(layer.ffn.ff_chunk(x) + x)
    context, _ = layer.attention.self(hidden, attention_mask=mask, **kwargs)
    x = layer.attention.output(context.reshape(-1, width)[rows], at_rows)
    return layer.output(layer.intermediate(x), x)

