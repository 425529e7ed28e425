"""The data stage's one boundary: held-out chunks and a training source.

``load_split`` reads ``--data`` in memory or as a stream and returns the same thing
either way: the held-out chunks (masked once by ``evaluation``) and a
:class:`TrainingSource`, which is all the training loop knows of its data. Another
kind of source (packed documents, a replay mix of general text, tokens from several
processes) is another class with these three methods; the loop, the metrics and the
config do not change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterator, Protocol

import numpy as np

from mlm_adapt.config import DataConfig, TrainConfig, cache_home
from mlm_adapt.data import chunk_stream, task_adaptive
from mlm_adapt.data.batching import MicroBatches, in_memory_batches, prefetch, streamed_batches
from mlm_adapt.data.chunk_stream import held_out_stream, training_batches
from mlm_adapt.data.chunking import Chunks, split_and_chunk
from mlm_adapt.data.corpus import StreamedCorpus, load_corpus
from mlm_adapt.data.masking import MaskingVocab
from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.data.task_adaptive import TaskTexts
from mlm_adapt.data.tokenization import TextEncoder, tokenize_corpus
from mlm_adapt.errors import MlmAdaptError

log = logging.getLogger("mlm_adapt")


class TrainingSource(Protocol):
    """Where a run's training batches come from."""

    documents: int | None  # documents in the corpus; None where unknown (a stream)

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        """Optimizer steps in one pass over the source."""

    def batches(self, config: TrainConfig, vocab: MaskingVocab, accelerator, start: int) -> Iterator[MicroBatches]:
        """This process's masked micro-batches for every step from ``start`` on (endless)."""

    def train_chunks(self, chunks_trained: int) -> int:
        """What ``metrics.json`` reports as ``train_chunks``, given the chunks trained on."""


@dataclass(frozen=True)
class InMemorySource:
    """Every training chunk in memory, shuffled once per epoch."""

    chunks: Chunks
    documents: int

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        return config.steps_per_epoch(len(self.chunks), world)

    def batches(self, config: TrainConfig, vocab: MaskingVocab, accelerator, start: int) -> Iterator[MicroBatches]:
        batches = in_memory_batches(self.chunks, config, vocab, accelerator, start)
        # On a GPU the host would otherwise mask the next batch while the GPU waits for it; on a
        # CPU the masking would only compete with the step's own threads for the same cores.
        return batches if accelerator.device.type == "cpu" else prefetch(batches)

    def train_chunks(self, chunks_trained: int) -> int:
        return len(self.chunks)  # the training set's size


@dataclass(frozen=True)
class StreamSource:
    """Chunks read from a stream as training goes (``--streaming``)."""

    read: Callable[[int, int, int], Iterator[Chunks]]  # (rank, world, batch size) -> batches, endless
    documents: None = None

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        return config.max_steps  # a stream's length is unknown: its run is one "epoch" of --max-steps

    def batches(self, config: TrainConfig, vocab: MaskingVocab, accelerator, start: int) -> Iterator[MicroBatches]:
        return streamed_batches(self.read, config, vocab, accelerator, start)

    def train_chunks(self, chunks_trained: int) -> int:
        return chunks_trained  # a stream has no size: what was trained on


@dataclass(frozen=True)
class SplitData:
    """Held-out chunks and the training source of one ``--data``."""

    train: TrainingSource
    eval: Chunks
    eval_documents: int
    replay_chunks: int = 0  # general-text chunks mixed into ``train`` (--replay-ratio)
    # Numbers of the held-out documents among the corpus's non-empty ones (in memory): what
    # tells the training side's texts from the others.
    held_out: np.ndarray | None = None
    # A stream's held-out documents as rows of --data (drawn by hash, chunk_stream.held_out).
    held_out_rows: np.ndarray | None = None


def load_split(config: DataConfig, tokenizer, seed: int, max_length: int, task: TaskTexts | None = None,
               order_seed: int | None = None) -> SplitData:
    """The whole data stage. In memory: read, tokenize (cached), hold out whole documents,
    chunk, downsample. As a stream: read the held-out documents from its head; training
    chunks are read while training. ``task`` (``--tapt``): the corpus loses the task's
    held-back texts and gains its others (``task_adaptive``) before documents are held out.
    ``seed`` draws the split (the split seed); ``order_seed`` a stream's shuffle (the
    training seed, default ``seed``)."""
    if config.chunk_size > max_length:
        raise MlmAdaptError(f"--chunk-size {config.chunk_size} is above the model's maximum of {max_length} positions")
    corpus = load_corpus(config)
    if isinstance(corpus, StreamedCorpus):
        eval_chunks, eval_documents, last = held_out_stream(corpus, config, tokenizer, seed)
        read = partial(training_batches, corpus, tokenizer, config, seed, last, order_seed=seed if order_seed is None else order_seed)
        rows = np.arange(last + 1)
        return SplitData(StreamSource(read), eval_chunks, eval_documents, held_out_rows=rows[chunk_stream.held_out(seed, rows)])
    tokens = tokenize_corpus(corpus, tokenizer, cache_dir=cache_home() / "tokens", num_workers=config.num_workers)
    if task is not None:
        texts = (text for batch in corpus.batches() for text in batch)
        tokens = task_adaptive.restrict(tokens, texts, task, TextEncoder.from_tokenizer(tokenizer).encode)
    split = split_and_chunk(tokens, config, tokenizer, seed)
    return SplitData(InMemorySource(split.train, split.documents), split.eval, split.eval_documents, held_out=split.held_out)


def with_replay(domain: SplitData, general: SplitData, ratio: float, seed: int) -> SplitData:
    """``domain`` whose training chunks become a share ``1 - ratio`` of a set completed by
    chunks of ``general``'s training side (its held-out documents stay out), drawn once
    and seeded; each epoch then shuffles the mix like any training set. Replaying general
    text is the usual remedy for forgetting (e.g. Gururangan et al. 2020, sec. 6)."""
    own, pool = domain.train, general.train
    if not isinstance(own, InMemorySource) or not isinstance(pool, InMemorySource):
        raise MlmAdaptError("--replay-ratio needs both corpora in memory (no --streaming)")
    wanted = round(ratio / (1 - ratio) * len(own.chunks))
    if wanted > len(pool.chunks):
        log.warning("--replay-ratio %.2f wants %d general-text chunks; --general-data has %d, all of them are used",
                    ratio, wanted, len(pool.chunks))
    rows = generator(seed, Salt.REPLAY_ROWS).choice(len(pool.chunks), min(wanted, len(pool.chunks)), replace=False)
    mixed = Chunks.concat([own.chunks, pool.chunks.select(np.sort(rows))])
    return replace(domain, train=InMemorySource(mixed, own.documents), replay_chunks=len(rows))
