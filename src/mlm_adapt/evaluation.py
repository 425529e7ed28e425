"""Perplexity on a held-out set whose masks are drawn once.

The evaluation chunks are masked a single time from a generator seeded by the run
seed (seed 002's point: re-masking at every evaluation makes before/after numbers
incomparable), and the same masked set serves before training, after every epoch
and after training, and in ``mlm-adapt evaluate`` later.

Perplexity is ``exp(total masked-token NLL / number of masked tokens)``. The
seeds' ``exp(mean of batch losses)`` over-weights batches with few masked tokens
(and seed 002 even repeats the last, smaller batch's loss to full batch size).

:func:`prepare` is what a run and ``mlm-adapt evaluate`` share: the same model
loading, the same held-out chunks and the same masks, which is why ``evaluate``
reproduces a run's ``perplexity_after``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from accelerate.utils import set_seed

from mlm_adapt.chunking import Chunks
from mlm_adapt.config import EvalConfig, MaskingConfig
from mlm_adapt.data import SplitData, load_split
from mlm_adapt.models import MaskedLMObjective, load_model, load_tokenizer, max_chunk_size
from mlm_adapt.runtime import make_accelerator
from mlm_adapt.vocabulary import bits_per_byte, token_bytes
from mlm_adapt.masking import IGNORE_INDEX, MaskingVocab, mask_batch
from mlm_adapt.seeding import Salt, generator


@dataclass(frozen=True)
class MaskedSet:
    """Evaluation inputs with their fixed masks."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    masked_bytes: int = 0  # UTF-8 bytes of text under the masks (vocabulary.token_bytes)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def masked_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class EvalResult:
    nll_sum: float
    masked_tokens: int
    masked_bytes: int = 0

    @property
    def loss(self) -> float:
        return self.nll_sum / self.masked_tokens if self.masked_tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """The same NLL per byte of masked text: comparable across tokenizations (added tokens)."""
        return bits_per_byte(self.nll_sum, self.masked_bytes)

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


def mask_eval_set(chunks: Chunks, masking: MaskingConfig, vocab: MaskingVocab, seed: int,
                  byte_counts: np.ndarray | None = None) -> MaskedSet:
    """Mask ``chunks`` once, reproducibly: same chunks, tokenizer and seed give the same set.
    ``byte_counts[id]`` (``vocabulary.token_bytes``) counts the masked text's bytes."""
    inputs, labels = mask_batch(
        chunks.input_ids,
        chunks.word_ids,
        scheme=masking.eval_masking,
        prob=masking.eval_mask_prob,
        vocab=vocab,
        rng=generator(seed, Salt.EVAL_MASKS),
    )
    masked_bytes = int(byte_counts[labels[labels != IGNORE_INDEX]].sum()) if byte_counts is not None else 0
    return MaskedSet(inputs, chunks.attention_mask, labels, masked_bytes)


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
    return EvalResult(float(nll_sum), int(count), masked.masked_bytes)


@dataclass
class Prepared:
    """Everything a run or an evaluation needs before the first forward pass."""

    model: torch.nn.Module
    tokenizer: Any
    data: SplitData
    eval_set: MaskedSet
    vocab: MaskingVocab
    added: list = field(default_factory=list)  # vocabulary.AddedWord, with --add-tokens


def prepare(config: EvalConfig, accelerator=None, extend: Callable | None = None) -> Prepared:
    """Load model and tokenizer, build the chunks and the once-masked evaluation set.
    ``extend(model, tokenizer) -> (model, tokenizer, added)`` changes the vocabulary first."""
    # Seeds torch before loading: a checkpoint without an MLM head gets a random one,
    # and dropout draws from the same generator during training.
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    model, tokenizer, added = extend(model, tokenizer) if extend is not None else (model, tokenizer, [])
    # Under torchrun the main process tokenizes first and fills the cache; the others then read it.
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        data = load_split(config.data, tokenizer, config.seed, max_chunk_size(model.config, tokenizer))
    vocab = MaskingVocab.from_tokenizer(tokenizer)
    eval_set = mask_eval_set(data.eval, config.masking, vocab, config.seed, token_bytes(tokenizer))
    return Prepared(model, tokenizer, data, eval_set, vocab, added)


def evaluate(config: EvalConfig) -> EvalResult:
    """Perplexity of ``config.model`` on the held-out chunks a ``train`` run with these options used."""
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    objective = accelerator.prepare(MaskedLMObjective(prepared.model))
    return evaluate_loss(objective, prepared.eval_set, config.batch_size, accelerator)
