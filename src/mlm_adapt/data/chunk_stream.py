"""Chunks from a corpus read as a stream (``--streaming``), for corpora bigger than memory.

Tokenization, the ``[CLS] body [SEP]`` framing of the stream "doc SEP doc ..." and
masking are the in-memory path's (``chunking``, ``masking``). What changes is what
needs the whole corpus there:

- Held-out documents: document ``i`` of the stream is held out when a hash of
  (seed, i) falls below ``MAX_EVAL_DOC_SHARE``, until the held-out text fills
  --eval-size chunks; every later document trains. In memory a seeded permutation
  picks them instead, so the two paths hold out different documents.
- Data parallelism: every process reads the stream, but process ``r`` of ``w``
  tokenizes and chunks only training documents ``i`` with ``i % w == r``.
- Order: chunks pass through a seeded shuffle buffer (--shuffle-buffer chunks);
  the stream is read again, with a new shuffle, whenever it ends before --max-steps.

Every stage is a seeded pure function of the stream, so resuming replays the
stream up to the checkpoint's step instead of storing a position in it.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from mlm_adapt.config import DataConfig
from mlm_adapt.data.chunking import MAX_EVAL_DOC_SHARE, Chunks, choose_rows, chunk_documents, count_chunks, frame_ids, stream_tail
from mlm_adapt.data.corpus import StreamedCorpus
from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.data.tokenization import TextEncoder, TokenizedCorpus, concat_tokens, encode_batches
from mlm_adapt.errors import MlmAdaptError

DOCS_PER_READ = 1_000


def held_out(seed: int, indices: np.ndarray) -> np.ndarray:
    """Whether each document index is drawn for evaluation: a SplitMix64 hash of (seed, index)."""
    with np.errstate(over="ignore"):
        z = np.uint64((seed << 16 | Salt.STREAM_HELD_OUT) % 2**64) + indices.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < MAX_EVAL_DOC_SHARE


def _numbered(corpus: StreamedCorpus) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(stream indices, texts) a read at a time; blank texts keep their index."""
    start = 0
    for texts in corpus.batches(DOCS_PER_READ):
        yield np.arange(start, start + len(texts)), texts
        start += len(texts)


def read_eval_documents(corpus: StreamedCorpus, encoder: TextEncoder, eval_tokens: int, seed: int) -> tuple[TokenizedCorpus, int]:
    """The held-out documents, read from the head of the stream until they hold
    ``eval_tokens`` tokens; and the index of the last document read for them
    (later documents all train)."""
    parts, total, last = [], 0, -1
    for indices, texts in _numbered(corpus):
        drawn = held_out(seed, indices)
        for index, text in zip(indices[drawn], (t for t, d in zip(texts, drawn) if d)):
            part = encoder.encode([text])
            parts.append(part)
            total += part.ids.size + part.num_documents
            last = int(index)
            if total >= eval_tokens:
                return concat_tokens(parts), last
        last = int(indices[-1]) if len(indices) else last
    tokens = concat_tokens(parts)
    if tokens.ids.size == 0:
        raise MlmAdaptError(f"--data {corpus.source}: the stream has too few documents to hold any out for evaluation")
    return tokens, last


def _training_tokens(corpus: StreamedCorpus, encoder: TextEncoder, seed: int, last_eval: int, rank: int, world: int,
                     num_workers: int = 0) -> Iterator[TokenizedCorpus]:
    """This process's training documents, tokenized a read at a time."""
    def kept() -> Iterator[list[str]]:
        for indices, texts in _numbered(corpus):
            keep = (indices % world == rank) & ~((indices <= last_eval) & held_out(seed, indices))
            yield [t for t, k in zip(texts, keep) if k]

    return encode_batches(encoder, kept(), num_workers)


def stream_chunks(batches: Iterable[TokenizedCorpus], chunk_size: int, tokenizer, remainder: str) -> Iterator[Chunks]:
    """The chunks ``chunk_documents`` would cut from all the batches' documents at once,
    cut a batch at a time: the stream's unfinished tail is carried into the next batch."""
    sep_id = frame_ids(tokenizer)[1]
    carry = None
    for batch in batches:
        if batch.num_documents == 0:
            continue
        tokens = batch if carry is None else concat_tokens([carry, batch])
        docs = np.arange(tokens.num_documents)
        full = count_chunks(tokens, docs, chunk_size, "drop")
        if full:
            yield chunk_documents(tokens, docs, chunk_size, tokenizer, "drop", np.arange(full))
        carry = stream_tail(tokens, docs, full * (chunk_size - 2), sep_id)
    if carry is not None and remainder == "pad" and count_chunks(carry, np.arange(1), chunk_size, "pad"):
        yield chunk_documents(carry, np.arange(1), chunk_size, tokenizer, "pad")


def shuffle_buffer(blocks: Iterable[Chunks], size: int, rng: np.random.Generator) -> Iterator[Chunks]:
    """Chunks in a seeded random order, holding at most ``size`` (plus one block) at a time.

    Once the pool holds more than ``size`` rows, a random selection of the excess
    leaves it, so every row out is a uniform draw from the pool."""
    pool: Chunks | None = None
    for block in blocks:
        pool = block if pool is None else Chunks.concat([pool, block])
        if len(pool) > size:
            order = rng.permutation(len(pool))
            yield pool.select(order[size:])
            pool = pool.select(order[:size])
    if pool is not None and len(pool):
        yield pool.select(rng.permutation(len(pool)))


def rebatch(blocks: Iterable[Chunks], size: int) -> Iterator[Chunks]:
    """Blocks of any length regrouped into batches of exactly ``size`` rows (a short last one kept)."""
    pending, held = [], 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        while held >= size:
            joined = Chunks.concat(pending)
            yield joined.select(np.arange(size))
            rest = joined.select(np.arange(size, len(joined)))
            pending, held = [rest], len(rest)
    if held:
        yield Chunks.concat(pending)


def training_batches(corpus: StreamedCorpus, tokenizer, config: DataConfig, seed: int, last_eval: int,
                     rank: int, world: int, size: int, order_seed: int | None = None) -> Iterator[Chunks]:
    """Endless batches of ``size`` chunks for process ``rank``: the stream is read again
    (with a new shuffle) each time it ends. Raises if a whole pass yields no chunk.
    ``seed`` drew the held-out documents (skipped here); ``order_seed`` (default ``seed``)
    draws the shuffle."""
    encoder = TextEncoder.from_tokenizer(tokenizer)

    def passes() -> Iterator[Chunks]:
        while True:
            found = False
            tokens = _training_tokens(corpus, encoder, seed, last_eval, rank, world, config.num_workers)
            for block in stream_chunks(tokens, config.chunk_size, tokenizer, config.remainder):
                found = True
                yield block
            if not found:
                raise MlmAdaptError(
                    f"--data {corpus.source}: process {rank} found no training chunk in a whole pass over the stream; "
                    "add text, lower --chunk-size, or use --remainder pad"
                )

    rng = generator(seed if order_seed is None else order_seed, Salt.STREAM_SHUFFLE, rank)
    return rebatch(shuffle_buffer(passes(), config.shuffle_buffer, rng), size)


def held_out_stream(corpus: StreamedCorpus, config: DataConfig, tokenizer, seed: int) -> tuple[Chunks, int, int]:
    """A stream's held-out chunks, how many documents they come from, and the index of the
    last document read for them (``training_batches`` needs it: later documents all train)."""
    tokens, last = read_eval_documents(corpus, TextEncoder.from_tokenizer(tokenizer), config.eval_size * (config.chunk_size - 2), seed)
    docs = np.arange(tokens.num_documents)
    total = count_chunks(tokens, docs, config.chunk_size, config.remainder)
    if total == 0:
        raise MlmAdaptError(
            f"the stream's held-out documents ({tokens.ids.size} tokens) do not fill one {config.chunk_size}-token "
            "chunk; add text, lower --chunk-size, or use --remainder pad"
        )
    rows = choose_rows(total, config.eval_size, seed, Salt.EVAL_ROWS)
    chunks = chunk_documents(tokens, docs, config.chunk_size, tokenizer, config.remainder, rows, with_documents=True)
    return chunks, tokens.num_documents, last
