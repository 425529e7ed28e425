"""Training batches: which chunks each optimizer step trains on, masked, split into
this process's micro-batches.

In memory, the step's global batch of ``batch_size x grad_accum x processes`` chunks
is masked at once from a generator seeded by (seed, epoch, step), so the masks do
not depend on how many processes share the work or on where a run was resumed;
each process then takes its micro-batches. A stream (``--streaming``) gives each
process its own batches (``chunk_stream``), masked from (seed, step, rank), and read
ahead by a background thread (:func:`prefetch`).
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from mlm_adapt.config import TrainConfig
from mlm_adapt.data.chunking import Chunks
from mlm_adapt.data.masking import MaskingVocab, mask_batch
from mlm_adapt.data.seeding import Salt, generator

# One micro-batch: (input_ids, attention_mask, labels) arrays.
MicroBatches = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _micro_batches(inputs: np.ndarray, attention: np.ndarray, labels: np.ndarray, pieces: list[np.ndarray]) -> MicroBatches:
    """One micro-batch per non-empty group of row numbers in ``pieces``."""
    return [(inputs[r], attention[r], labels[r]) for r in pieces if len(r)]


def _mask(part: Chunks, config: TrainConfig, vocab: MaskingVocab, rng: np.random.Generator):
    return mask_batch(part.input_ids, part.word_ids, scheme=config.masking.masking,
                      prob=config.masking.train_mask_prob(), vocab=vocab, rng=rng)


def in_memory_batches(chunks: Chunks, config: TrainConfig, vocab: MaskingVocab, accelerator, start: int) -> Iterator[MicroBatches]:
    """From step ``start`` on: the step's global batch, masked as one with the step's own
    generator; this process's micro-batches of it."""
    world, rank = accelerator.num_processes, accelerator.process_index
    per_epoch, size = config.steps_per_epoch(len(chunks), world), config.batch_size * config.grad_accum * world
    order_epoch, order = None, None
    for step in itertools.count(start):
        epoch, in_epoch = divmod(step, per_epoch)
        if order_epoch != epoch:  # one shuffle per epoch, not per step
            order_epoch, order = epoch, generator(config.seed, Salt.TRAIN_ORDER, epoch).permutation(len(chunks))
        part = chunks.select(order[in_epoch * size : (in_epoch + 1) * size])
        inputs, labels = _mask(part, config, vocab, generator(config.seed, Salt.TRAIN_MASKS, epoch, in_epoch))
        pieces = np.array_split(np.arange(len(part)), config.grad_accum * world)[rank::world]
        yield _micro_batches(inputs, part.attention_mask, labels, pieces)


def streamed_batches(read: Callable[[int, int, int], Iterator[Chunks]], config: TrainConfig, vocab: MaskingVocab,
                     accelerator, start: int) -> Iterator[MicroBatches]:
    """This process's own batches of the stream (``read(rank, world, size)``) from step
    ``start`` on; resuming replays (reads and tokenizes, but does not train on) the steps before it."""
    rank = accelerator.process_index
    source = read(rank, accelerator.num_processes, config.batch_size * config.grad_accum)
    for step, part in enumerate(prefetch(itertools.islice(source, start, None)), start=start):
        inputs, labels = _mask(part, config, vocab, generator(config.seed, Salt.STREAM_MASKS, step, rank))
        yield _micro_batches(inputs, part.attention_mask, labels, np.array_split(np.arange(len(part)), config.grad_accum))


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced by a background thread, ``depth`` ahead: tokenizing the next
    batches (the Rust tokenizer releases the GIL) overlaps with the training step."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done, stopped = object(), threading.Event()

    def put(item) -> None:
        while not stopped.is_set():
            try:
                return slots.put(item, timeout=0.1)
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                if stopped.is_set():
                    return
                put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
        put(done)

    threading.Thread(target=produce, daemon=True, name="mlm-adapt-stream").start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()  # the consumer left early (end of training, an error): let the thread end
