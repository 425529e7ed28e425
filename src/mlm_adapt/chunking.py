"""Tokenizing documents, holding out evaluation documents, and cutting fixed-length chunks.

Documents are tokenized once without special tokens or truncation into flat
NumPy arrays (token ids, word starts, special-token flags, document offsets).
Everything after that is array arithmetic: no Python list concatenation, which is
what makes the seeds' ``sum(lists, [])`` quadratic.

Each chunk is ``[CLS] body [SEP]`` (``<s> body </s>`` for RoBERTa) where the body
is ``chunk_size - 2`` tokens of the stream "doc SEP doc SEP doc ...": every chunk
starts the way the model saw text in pre-training, and document boundaries
stay marked.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from mlm_adapt.config import DataConfig, cache_home
from mlm_adapt.corpus import Corpus, load_corpus
from mlm_adapt.errors import MlmAdaptError

# Word ids of special tokens (CLS, SEP, PAD and separators between documents).
NO_WORD = -1
# At most this share of documents is held out for evaluation, so a small corpus
# still leaves most of its text for training.
MAX_EVAL_DOC_SHARE = 0.1


@dataclass(frozen=True)
class TokenizedCorpus:
    """All documents' tokens back to back; document ``d`` is ``ids[offsets[d]:offsets[d+1]]``."""

    ids: np.ndarray  # int32
    word_starts: np.ndarray  # bool: the token begins a word
    special: np.ndarray  # bool: a special token inside the text (e.g. a literal "[MASK]")
    offsets: np.ndarray  # int64, one more than the number of documents

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Chunks:
    """Fixed-length model inputs; ``word_ids`` is ``NO_WORD`` at special and pad positions."""

    input_ids: np.ndarray  # int64 [n, chunk_size]
    attention_mask: np.ndarray  # int64 [n, chunk_size]
    word_ids: np.ndarray  # int64 [n, chunk_size], unique per word within a chunk

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, rows: np.ndarray) -> "Chunks":
        return Chunks(self.input_ids[rows], self.attention_mask[rows], self.word_ids[rows])

    def special_mask(self) -> np.ndarray:
        return self.word_ids == NO_WORD


@dataclass(frozen=True)
class SplitData:
    train: Chunks
    eval: Chunks
    eval_documents: int
    documents: int


def tokenize_corpus(corpus: Corpus, tokenizer, cache_dir: Path | None = None, batch_size: int = 1_000) -> TokenizedCorpus:
    """Tokenize every non-empty document; reuse ``cache_dir`` when the same data and tokenizer were seen."""
    if not getattr(tokenizer, "is_fast", False):
        raise MlmAdaptError("this tokenizer has no fast (Rust) version; mlm-adapt needs one for word ids")
    path = _cache_path(corpus, tokenizer, cache_dir)
    if path is not None and path.exists():
        with np.load(path) as cached:
            return TokenizedCorpus(cached["ids"], cached["word_starts"], cached["special"], cached["offsets"])
    tokens = _tokenize(corpus, tokenizer, batch_size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=tokens.ids, word_starts=tokens.word_starts, special=tokens.special, offsets=tokens.offsets)
        os.replace(tmp, path)
    return tokens


def _tokenize(corpus: Corpus, tokenizer, batch_size: int) -> TokenizedCorpus:
    ids, words, lengths = [], [], []

    def collect(encodings) -> None:
        lengths.extend(len(e.ids) for e in encodings)
        ids.append(np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32))
        # None (a special token in the text) becomes NaN in a float array: no per-token Python.
        words.append(np.array(list(chain.from_iterable(e.word_ids for e in encodings)), dtype=np.float64))

    # The Rust tokenizer directly: transformers' wrapper would convert every encoding to
    # Python lists first (and warn about documents longer than model_max_length, which
    # chunking expects). It already uses every core (TOKENIZERS_PARALLELISM); about
    # two thirds of this function's time is spent in it (docs/performance.md).
    backend = tokenizer.backend_tokenizer
    for texts in corpus.batches(batch_size):
        collect(backend.encode_batch([t for t in texts if t.strip()], add_special_tokens=False))
    if not lengths or sum(lengths) == 0:
        raise MlmAdaptError(f"--data {corpus.source}: the corpus is empty (no document holds any text)")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    word_ids = np.concatenate(words)
    special = np.isnan(word_ids)
    starts = np.ones(len(word_ids), dtype=bool)
    starts[1:] = word_ids[1:] != word_ids[:-1]  # NaN != NaN: specials start their own "word"
    starts[offsets[:-1][np.diff(offsets) > 0]] = True  # a document's first token starts a word
    return TokenizedCorpus(np.concatenate(ids), starts, special, offsets)


def _cache_path(corpus: Corpus, tokenizer, cache_dir: Path | None) -> Path | None:
    fingerprint = getattr(corpus.dataset, "_fingerprint", None)
    if cache_dir is None or fingerprint is None:
        return None
    key = hashlib.sha256()
    for part in (fingerprint, corpus.column, tokenizer.backend_tokenizer.to_str(), "v1"):
        key.update(part.encode())
    return Path(cache_dir) / f"{key.hexdigest()[:32]}.npz"


def split_documents(lengths: np.ndarray, eval_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole documents for evaluation: a seeded shuffle, then a prefix.

    The prefix stops once it holds ``eval_tokens`` tokens or ``MAX_EVAL_DOC_SHARE``
    of the documents (at least one). Returns sorted (train, eval) document indices.
    """
    n = len(lengths)
    if n < 2:
        raise MlmAdaptError("the corpus has a single document; need at least two to hold out evaluation text")
    order = np.random.default_rng([seed, 0xE7A1]).permutation(n)
    cumulative = np.cumsum(lengths[order] + 1)
    wanted = int(np.searchsorted(cumulative, eval_tokens)) + 1
    count = max(1, min(wanted, int(n * MAX_EVAL_DOC_SHARE)))
    return np.sort(order[count:]), np.sort(order[:count])


def chunk_documents(tokens: TokenizedCorpus, docs: np.ndarray, chunk_size: int, tokenizer, remainder: str) -> Chunks:
    """Concatenate ``docs`` with separators and cut ``[CLS] body [SEP]`` chunks of ``chunk_size``."""
    cls_id, sep_id, pad_id = _frame_ids(tokenizer)
    body = chunk_size - 2
    stream_ids, stream_words = _stream(tokens, docs, sep_id)
    full = len(stream_ids) // body
    rest = len(stream_ids) - full * body
    rows = full + (1 if remainder == "pad" and rest else 0)
    input_ids = np.full((rows, chunk_size), pad_id, dtype=np.int64)
    word_ids = np.full((rows, chunk_size), NO_WORD, dtype=np.int64)
    attention = np.zeros((rows, chunk_size), dtype=np.int64)
    input_ids[:full, 1:-1] = stream_ids[: full * body].reshape(full, body)
    word_ids[:full, 1:-1] = stream_words[: full * body].reshape(full, body)
    attention[:full] = 1
    input_ids[:full, 0], input_ids[:full, -1] = cls_id, sep_id
    if rows > full:
        input_ids[full, 0], input_ids[full, 1 : rest + 1], input_ids[full, rest + 1] = cls_id, stream_ids[-rest:], sep_id
        word_ids[full, 1 : rest + 1] = stream_words[-rest:]
        attention[full, : rest + 2] = 1
    return Chunks(input_ids, attention, word_ids)


def _stream(tokens: TokenizedCorpus, docs: np.ndarray, sep_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The selected documents' ids joined by ``sep_id``, and a global word index per token."""
    lengths = tokens.lengths()[docs]
    # Index of every selected token in the flat arrays: the concatenation of the
    # documents' ranges, built without a Python loop over documents.
    before = np.cumsum(lengths) - lengths
    source = np.repeat(tokens.offsets[docs] - before, lengths) + np.arange(lengths.sum())
    total = int(lengths.sum()) + len(docs) - 1
    is_sep = np.zeros(total, dtype=bool)
    is_sep[(before + np.arange(len(docs)))[1:] - 1] = True
    ids = np.full(total, sep_id, dtype=np.int64)
    ids[~is_sep] = tokens.ids[source]
    is_start = is_sep.copy()
    is_start[~is_sep] = tokens.word_starts[source]
    is_special = is_sep.copy()
    is_special[~is_sep] = tokens.special[source]
    words = np.cumsum(is_start)
    words[is_special] = NO_WORD
    return ids, words


def _frame_ids(tokenizer) -> tuple[int, int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if cls_id is None or sep_id is None or pad_id is None:
        raise MlmAdaptError("the tokenizer lacks a CLS/BOS, SEP/EOS or PAD token, which chunks need")
    return int(cls_id), int(sep_id), int(pad_id)


def downsample(chunks: Chunks, size: int | None, seed: int, stream: int) -> Chunks:
    """At most ``size`` chunks, drawn without replacement, kept in corpus order."""
    if size is None or size >= len(chunks):
        return chunks
    rows = np.sort(np.random.default_rng([seed, stream]).choice(len(chunks), size=size, replace=False))
    return chunks.select(rows)


def split_and_chunk(tokens: TokenizedCorpus, config: DataConfig, tokenizer, seed: int) -> SplitData:
    """Hold out evaluation documents, chunk both sides, downsample to the requested sizes."""
    body = config.chunk_size - 2
    train_docs, eval_docs = split_documents(tokens.lengths(), config.eval_size * body, seed)
    train = chunk_documents(tokens, train_docs, config.chunk_size, tokenizer, config.remainder)
    held_out = chunk_documents(tokens, eval_docs, config.chunk_size, tokenizer, config.remainder)
    if len(train) == 0 or len(held_out) == 0:
        side = "training" if len(train) == 0 else "evaluation"
        raise MlmAdaptError(
            f"the corpus is too short: its {side} part ({tokens.ids.size} tokens in all) does not fill one "
            f"{config.chunk_size}-token chunk; add text, lower --chunk-size, or use --remainder pad"
        )
    logging.getLogger(__name__).info("held out %d of %d documents", len(eval_docs), tokens.num_documents)
    return SplitData(
        train=downsample(train, config.train_size, seed, 1),
        eval=downsample(held_out, config.eval_size, seed, 2),
        eval_documents=len(eval_docs),
        documents=tokens.num_documents,
    )


def load_split(config: DataConfig, tokenizer, seed: int, max_length: int) -> SplitData:
    """The whole data stage: read, tokenize (cached), hold out, chunk, downsample."""
    if config.chunk_size > max_length:
        raise MlmAdaptError(f"--chunk-size {config.chunk_size} is above the model's maximum of {max_length} positions")
    corpus = load_corpus(config)
    tokens = tokenize_corpus(corpus, tokenizer, cache_dir=cache_home() / "tokens")
    return split_and_chunk(tokens, config, tokenizer, seed)
