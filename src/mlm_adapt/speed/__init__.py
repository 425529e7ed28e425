"""Speed work, behind one boundary: everything that makes a step faster without changing
its numbers, and one switch that turns all of it off.

What it owns (each measured in docs/performance.md):

- the MLM head on the masked rows only, with their count rounded up to a bucket
  (:func:`masked_hidden`): the vocabulary projection is ~a third of a DistilBERT forward,
  yet ~15% of positions need it;
- the last layer's queries and position-wise part on those rows only (``last_layer``);
- cheaper dropout masks, with eager attention registered under its own name
  (``cpu_dropout``: models loaded with another attention are untouched);
- glibc's allocator keeping freed memory (:func:`tune_process`), which the ``train`` and
  ``demo`` commands call for their own process; a library call never changes its caller's.

``MLM_ADAPT_PLAIN=1`` runs transformers' model as it comes (full forward and logits, its
own attention and dropout, the system allocator) to rule the speed work out when numbers
look wrong; tests/test_models.py shows losses and gradients equal either way.

Called from ``modeling`` only (loading: :func:`attention_for`, :func:`after_load`;
the loss: :func:`masked_hidden`), and ``cli`` for :func:`tune_process`. May import: torch,
transformers, the standard library and ``data.masking`` (the label that marks an unmasked position).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Mapping

import torch
from torch import nn

from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.speed import cpu_dropout, last_layer

PLAIN_OFF = "MLM_ADAPT_PLAIN"

# Rows the MLM head predicts are padded to a multiple of this (padding rows are ignored by
# the loss): a handful of distinct tensor sizes instead of one per batch keeps the allocator
# from fragmenting (RSS grew from 1.7 to 3+ GB in 40 steps without it).
SPARSE_BUCKET = 128

# Families whose attention and dropout cpu_dropout's eager attention reproduces.
_CPU_DROPOUT_FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert")


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the speed paths are on (``MLM_ADAPT_PLAIN`` unset or not "1")."""
    return environ.get(PLAIN_OFF) != "1"


def attention_for(config, on_cpu: bool) -> str | None:
    """The attention implementation to load a model with on a CPU: cpu_dropout's eager
    attention (eager is ~6% faster than SDPA's CPU kernels for 128-token chunks in bf16);
    None (transformers' default) on accelerators, for other families and when plain."""
    if not (enabled() and on_cpu and config.model_type in _CPU_DROPOUT_FAMILIES):
        return None
    cpu_dropout.register()
    return cpu_dropout.ATTENTION


def after_load(model: nn.Module) -> None:
    """Give a model loaded with :func:`attention_for`'s attention the cheaper dropout masks."""
    if model.config._attn_implementation == cpu_dropout.ATTENTION:
        cpu_dropout.use_cpu_dropout(model)


def trims_last_layer(encoder: nn.Module) -> bool:
    """Whether :func:`masked_hidden` runs ``encoder``'s last layer on the masked rows only."""
    return enabled() and last_layer.trimmable(encoder) is not None


def masked_hidden(encoder: nn.Module, positions: torch.Tensor, flat_labels: torch.Tensor,
                  **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's last hidden state at the flat ``positions`` and their targets, padded
    to a multiple of SPARSE_BUCKET with IGNORE_INDEX targets (exact when plain)."""
    count = int(positions.numel())
    padded = -(-count // SPARSE_BUCKET) * SPARSE_BUCKET if enabled() else count
    rows = torch.cat([positions, positions.new_zeros(padded - count)])
    targets = torch.cat([flat_labels[positions], flat_labels.new_full((padded - count,), IGNORE_INDEX)])
    layer = last_layer.trimmable(encoder) if enabled() else None
    if layer is None or rows.numel() >= inputs["input_ids"].numel():  # bucket padding can exceed a tiny batch
        hidden = encoder(**inputs).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1])[rows], targets
    with last_layer.skipped(layer) as call:
        hidden = encoder(**inputs).last_hidden_state  # the last layer's input
    return last_layer.tail(layer, hidden, rows, call, count), targets


def tune_process(device_type: str = "cpu") -> bool:
    """What the ``train`` and ``demo`` commands (not the library) do to their own process
    before training on a CPU: :func:`keep_freed_memory`. Returns whether it changed anything."""
    return device_type == "cpu" and enabled() and keep_freed_memory()


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEEP_FREED_MEMORY_OFF = "MLM_ADAPT_SYSTEM_MALLOC"


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the OS;
    True when set. A training step allocates and frees the same large tensors every step
    (vocabulary-sized weight casts and gradients, activations); by default glibc maps each
    allocation over 32 MB afresh and unmaps it when freed, so every step pays page faults
    on hundreds of MB: a fresh 94 MB fp32 -> bf16 cast took 16.8 ms against 3.6 ms into
    reused memory, and DistilBERT's step ran 18-24% faster without them
    (docs/performance.md). Peak memory is unchanged: the step's peak is reused, not grown.
    Process-wide and idempotent; skipped off glibc and with MLM_ADAPT_SYSTEM_MALLOC=1."""
    if environ.get(KEEP_FREED_MEMORY_OFF) == "1" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # M_MMAP_MAX 0: every allocation from the heap, none mmap()ed; trim threshold 2 GiB (mallopt takes a C int):
    # glibc gives the heap's top back only beyond that much free memory.
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
