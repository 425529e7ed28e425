"""Perplexity on a held-out set whose masks are drawn once.

The evaluation chunks are masked a single time from a generator seeded by the run
seed (seed 002's point: re-masking at every evaluation makes before/after numbers
incomparable), and the same masked set serves before training, after every epoch
and after training, and in ``mlm-adapt evaluate`` later.

Perplexity is ``exp(total masked-token NLL / number of masked tokens)``. The
seeds' ``exp(mean of batch losses)`` over-weights batches with few masked tokens
(and seed 002 even repeats the last, smaller batch's loss to full batch size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mlm_adapt.chunking import Chunks
from mlm_adapt.config import MaskingConfig
from mlm_adapt.masking import IGNORE_INDEX, MaskingVocab, mask_batch
from mlm_adapt.seeding import Salt, generator


@dataclass(frozen=True)
class MaskedSet:
    """Evaluation inputs with their fixed masks."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def masked_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class EvalResult:
    nll_sum: float
    masked_tokens: int

    @property
    def loss(self) -> float:
        return self.nll_sum / self.masked_tokens if self.masked_tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll_sum, self.masked_tokens)


def perplexity(nll_sum: float, masked_tokens: int) -> float:
    """exp of the mean NLL per masked token; ``inf`` where that overflows."""
    if masked_tokens <= 0:
        return float("nan")
    try:
        return math.exp(nll_sum / masked_tokens)
    except OverflowError:
        return float("inf")


def mask_eval_set(chunks: Chunks, masking: MaskingConfig, vocab: MaskingVocab, seed: int) -> MaskedSet:
    """Mask ``chunks`` once, reproducibly: same chunks, tokenizer and seed give the same set."""
    inputs, labels = mask_batch(
        chunks.input_ids,
        chunks.word_ids,
        scheme=masking.eval_masking,
        prob=masking.eval_mask_prob,
        vocab=vocab,
        rng=generator(seed, Salt.EVAL_MASKS),
    )
    return MaskedSet(inputs, chunks.attention_mask, labels)


@torch.inference_mode()
def evaluate_loss(objective, masked: MaskedSet, batch_size: int, accelerator) -> EvalResult:
    """Summed NLL and masked-token count over ``masked``, each process taking its share of rows."""
    was_training = objective.training
    objective.eval()
    shards = np.array_split(np.arange(len(masked)), accelerator.num_processes)
    rows = shards[accelerator.process_index]
    nll_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    count = torch.zeros((), dtype=torch.int64, device=accelerator.device)
    # Every process runs as many forward passes as the largest shard needs: a wrapped
    # model's forward can be collective (DDP broadcasts buffers, FSDP gathers weights).
    # A process out of rows repeats row 0 with every label ignored.
    for start in range(0, len(shards[0]), batch_size):
        batch = rows[start : start + batch_size]
        labels = masked.labels[batch] if len(batch) else np.full_like(masked.labels[:1], IGNORE_INDEX)
        batch = batch if len(batch) else np.zeros(1, dtype=np.int64)
        tensors = [torch.from_numpy(a).to(accelerator.device) for a in (masked.input_ids[batch], masked.attention_mask[batch], labels)]
        nll, n = objective(*tensors)
        nll_sum += nll.double()
        count += n
    objective.train(was_training)
    nll_sum, count = accelerator.reduce(nll_sum, "sum"), accelerator.reduce(count, "sum")
    return EvalResult(float(nll_sum), int(count))
