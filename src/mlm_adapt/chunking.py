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
from typing import Any

import numpy as np

from mlm_adapt.config import DataConfig
from mlm_adapt.corpus import Corpus
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.seeding import Salt, generator

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

    @staticmethod
    def concat(parts: list["Chunks"]) -> "Chunks":
        return Chunks(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("input_ids", "attention_mask", "word_ids")))


@dataclass(frozen=True)
class ChunkedSplit:
    """Training and held-out chunks of a corpus held in memory."""

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
    encoder = TextEncoder.from_tokenizer(tokenizer)
    tokens = concat_tokens([encoder.encode(texts) for texts in corpus.batches(batch_size)])
    if tokens.ids.size == 0:
        raise MlmAdaptError(f"--data {corpus.source}: the corpus is empty (no document holds any text)")
    return tokens


@dataclass(frozen=True)
class TextEncoder:
    """The Rust tokenizer, called directly, and the ids that are never words.

    transformers' wrapper would convert every encoding to Python lists first (and
    warn about documents longer than model_max_length, which chunking expects). The
    Rust tokenizer already uses every core (TOKENIZERS_PARALLELISM); about two thirds
    of tokenization time is spent in it (docs/performance.md).
    """

    backend: Any
    special_ids: np.ndarray  # every id in tokenizer.all_special_ids, [UNK] included

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TextEncoder":
        return cls(plain_backend(tokenizer), np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int32))

    def encode(self, texts: list[str]) -> TokenizedCorpus:
        """One batch of texts as flat arrays; blank texts are skipped (they are not documents)."""
        encodings = self.backend.encode_batch([t for t in texts if t.strip()], add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(offsets[-1]))
        # None (an added special token in the text) becomes NaN in a float array: no per-token
        # Python. float32 holds word indices exactly up to 2**24 words per document.
        word_ids = np.array(list(chain.from_iterable(e.word_ids for e in encodings)), dtype=np.float32)
        # A literal "[MASK]" or "<mask>" can come back with a word id, and [UNK] always does
        # (the model, not the added-token layer, produces it): the ids decide, as in the
        # course's collator, so none of them is ever chosen for masking or used as a label.
        special = np.isnan(word_ids) | np.isin(ids, self.special_ids)
        starts = np.ones(len(word_ids), dtype=bool)
        starts[1:] = word_ids[1:] != word_ids[:-1]  # NaN != NaN: specials start their own "word"
        starts[special] = True
        starts[offsets[:-1][lengths > 0]] = True  # a document's first token starts a word
        return TokenizedCorpus(ids, starts, special, offsets)


def concat_tokens(parts: list[TokenizedCorpus]) -> TokenizedCorpus:
    """The documents of ``parts`` back to back, in order."""
    if not parts:
        return TokenizedCorpus(np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, bool), np.zeros(1, np.int64))
    shifts = np.cumsum([0] + [p.ids.size for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + shift for p, shift in zip(parts, shifts)])
    return TokenizedCorpus(
        np.concatenate([p.ids for p in parts]), np.concatenate([p.word_starts for p in parts]),
        np.concatenate([p.special for p in parts]), offsets.astype(np.int64),
    )


def plain_backend(tokenizer):
    """A copy of the Rust tokenizer without the padding and truncation a tokenizer.json
    may carry (sentence-transformers files pad and cut every text to 128 tokens):
    transformers' wrapper overrides them on every call, a direct call would not."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def _cache_path(corpus: Corpus, tokenizer, cache_dir: Path | None) -> Path | None:
    fingerprint = getattr(corpus.dataset, "_fingerprint", None)
    if cache_dir is None or fingerprint is None:
        return None
    key = hashlib.sha256()
    for part in (fingerprint, corpus.column, tokenizer.backend_tokenizer.to_str(), "v3"):
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
    order = generator(seed, Salt.SPLIT).permutation(n)
    cumulative = np.cumsum(lengths[order] + 1)
    wanted = int(np.searchsorted(cumulative, eval_tokens)) + 1
    count = max(1, min(wanted, int(n * MAX_EVAL_DOC_SHARE)))
    return np.sort(order[count:]), np.sort(order[:count])


def _stream_length(tokens: TokenizedCorpus, docs: np.ndarray) -> int:
    """Positions in the stream "doc SEP doc SEP ... doc" over ``docs``."""
    return int(tokens.lengths()[docs].sum()) + len(docs) - 1


def count_chunks(tokens: TokenizedCorpus, docs: np.ndarray, chunk_size: int, remainder: str) -> int:
    """How many chunks ``chunk_documents`` cuts from ``docs`` (without building them)."""
    full, rest = divmod(_stream_length(tokens, docs), chunk_size - 2)
    return full + (1 if remainder == "pad" and rest else 0)


def chunk_documents(tokens: TokenizedCorpus, docs: np.ndarray, chunk_size: int, tokenizer,
                    remainder: str, rows: np.ndarray | None = None) -> Chunks:
    """``[CLS] body [SEP]`` chunks of the stream "doc SEP doc SEP ..." over ``docs``.

    Only the chunks numbered ``rows`` (all by default) are built, straight from the
    flat token arrays: memory follows the chunks kept, not the corpus size (a
    200 MB file needed 10 GB when the whole stream was materialised first).
    """
    cls_id, sep_id, pad_id = frame_ids(tokenizer)
    body = chunk_size - 2
    stream = _stream_length(tokens, docs)
    rows = np.arange(count_chunks(tokens, docs, chunk_size, remainder)) if rows is None else np.asarray(rows)
    position = rows[:, None] * body + np.arange(body)[None, :]
    inside = position < stream
    source, is_sep = _locate(tokens, docs, np.minimum(position, stream - 1))
    content = np.where(is_sep, sep_id, _at(tokens.ids, source))
    special = is_sep | _at(tokens.special, source) | ~inside
    starts = is_sep | _at(tokens.word_starts, source)
    words = np.cumsum(starts, axis=1)  # unique per word within a chunk, which is all masking needs
    words[special] = NO_WORD
    return _frame(np.where(inside, content, pad_id), words, inside.sum(axis=1), cls_id, sep_id, pad_id)


def _locate(tokens: TokenizedCorpus, docs: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions of the stream "doc SEP doc SEP ..." over ``docs``: the index into
    ``tokens.ids`` of each, and whether it is a separator instead."""
    lengths = tokens.lengths()[docs]
    # Document d occupies stream positions [begin[d], begin[d] + lengths[d]); the next
    # position is the separator before document d + 1.
    begin = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    doc = np.searchsorted(begin, position, side="right") - 1
    offset = position - begin[doc]
    is_sep = offset >= lengths[doc]
    source = np.minimum(tokens.offsets[docs][doc] + offset, max(len(tokens.ids) - 1, 0))
    return source, is_sep


def _at(values: np.ndarray, source: np.ndarray) -> np.ndarray:
    # Documents that tokenize to nothing leave no token to point at: only separators.
    return values[source] if values.size else np.zeros(source.shape, values.dtype)


def stream_tail(tokens: TokenizedCorpus, docs: np.ndarray, start: int, sep_id: int) -> TokenizedCorpus:
    """Stream positions ``start`` to the end as one document (separators become SEP tokens
    flagged special), so that chunking it followed by more documents continues the stream."""
    position = np.arange(start, _stream_length(tokens, docs))
    if position.size == 0:
        return TokenizedCorpus(np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, bool), np.zeros(2, np.int64))
    source, is_sep = _locate(tokens, docs, position)
    return TokenizedCorpus(
        np.where(is_sep, sep_id, _at(tokens.ids, source)).astype(np.int32),
        is_sep | _at(tokens.word_starts, source), is_sep | _at(tokens.special, source),
        np.array([0, position.size], dtype=np.int64),
    )


def _frame(content: np.ndarray, words: np.ndarray, used: np.ndarray, cls_id: int, sep_id: int, pad_id: int) -> Chunks:
    """Wrap bodies in CLS ... SEP (SEP right after the last used position), pad the rest."""
    count, body = content.shape
    input_ids = np.full((count, body + 2), pad_id, dtype=np.int64)
    word_ids = np.full((count, body + 2), NO_WORD, dtype=np.int64)
    input_ids[:, 1:-1], word_ids[:, 1:-1] = content, words
    input_ids[:, 0] = cls_id
    input_ids[np.arange(count), used + 1] = sep_id
    attention = (np.arange(body + 2)[None, :] < (used + 2)[:, None]).astype(np.int64)
    return Chunks(input_ids, attention, word_ids)


def frame_ids(tokenizer) -> tuple[int, int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if cls_id is None or sep_id is None or pad_id is None:
        raise MlmAdaptError("the tokenizer lacks a CLS/BOS, SEP/EOS or PAD token, which chunks need")
    return int(cls_id), int(sep_id), int(pad_id)


def choose_rows(total: int, size: int | None, seed: int, salt: Salt) -> np.ndarray:
    """At most ``size`` of ``total`` chunk numbers, drawn without replacement, in corpus order."""
    if size is None or size >= total:
        return np.arange(total)
    return np.sort(generator(seed, salt).choice(total, size=size, replace=False))


def split_and_chunk(tokens: TokenizedCorpus, config: DataConfig, tokenizer, seed: int) -> ChunkedSplit:
    """Hold out evaluation documents, then cut the requested number of chunks from each side."""
    body = config.chunk_size - 2
    train_docs, eval_docs = split_documents(tokens.lengths(), config.eval_size * body, seed)
    sides = []
    for docs, size, salt, side in ((train_docs, config.train_size, Salt.TRAIN_ROWS, "training"),
                                   (eval_docs, config.eval_size, Salt.EVAL_ROWS, "evaluation")):
        total = count_chunks(tokens, docs, config.chunk_size, config.remainder)
        if total == 0:
            raise MlmAdaptError(
                f"the corpus is too short: its {side} part ({tokens.ids.size} tokens in all) does not fill one "
                f"{config.chunk_size}-token chunk; add text, lower --chunk-size, or use --remainder pad"
            )
        rows = choose_rows(total, size, seed, salt)
        sides.append(chunk_documents(tokens, docs, config.chunk_size, tokenizer, config.remainder, rows))
    logging.getLogger(__name__).info("held out %d of %d documents", len(eval_docs), tokens.num_documents)
    return ChunkedSplit(train=sides[0], eval=sides[1], eval_documents=len(eval_docs), documents=tokens.num_documents)

