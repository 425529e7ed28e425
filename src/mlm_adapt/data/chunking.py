"""Holding out evaluation documents and cutting fixed-length chunks.

Documents arrive tokenized (``tokenization``) as flat NumPy arrays (token ids, word
starts, special-token flags, document offsets). Everything here is array arithmetic:
no Python list concatenation, which is what makes the seeds' ``sum(lists, [])``
quadratic.

Each chunk is ``[CLS] body [SEP]`` (``<s> body </s>`` for RoBERTa) where the body
is ``chunk_size - 2`` tokens of the stream "doc SEP doc SEP doc ...": every chunk
starts the way the model saw text in pre-training, and document boundaries
stay marked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mlm_adapt.config import DataConfig
from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.data.tokenization import TokenizedCorpus
from mlm_adapt.errors import MlmAdaptError

# Word ids of special tokens (CLS, SEP, PAD and separators between documents).
NO_WORD = -1
# Chunks.documents at the CLS and closing SEP columns.
NO_DOCUMENT = -1
# At most this share of documents is held out for evaluation, so a small corpus
# still leaves most of its text for training.
MAX_EVAL_DOC_SHARE = 0.1
# Chunks built per pass: 4096 x 126 positions keep each temporary near 4 MB, which glibc
# then reuses from its heap instead of mapping (and faulting in) fresh pages.
ROWS_PER_BLOCK = 4096


@dataclass(frozen=True)
class Chunks:
    """Fixed-length model inputs; ``word_ids`` is ``NO_WORD`` at special and pad positions."""

    input_ids: np.ndarray  # int64 [n, chunk_size]
    attention_mask: np.ndarray  # int64 [n, chunk_size]
    word_ids: np.ndarray  # int64 [n, chunk_size], unique per word within a chunk
    # int64 [n, chunk_size]: each position's document, numbered as in the tokenized corpus
    # the chunks were cut from (one ``chunk_documents`` call); a separator counts for the
    # document it ends, padding past the corpus's end for the last, and CLS and the closing
    # SEP are NO_DOCUMENT. Built for held-out chunks only: tokens of one document are
    # correlated, so perplexity intervals resample documents, not chunks or tokens.
    documents: np.ndarray | None = None
    # bool [n, chunk_size], built with ``documents``: True at the tokens of a word the chunk's
    # edges cut (begun in the chunk before or finished in the next). Fixed-length chunks of a
    # token stream cut words; such a word's pieces here ("##ing") are not the word.
    cut: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, rows: np.ndarray) -> "Chunks":
        return Chunks(self.input_ids[rows], self.attention_mask[rows], self.word_ids[rows],
                      *(None if extra is None else extra[rows] for extra in (self.documents, self.cut)))

    @staticmethod
    def concat(parts: list["Chunks"]) -> "Chunks":
        """The rows of ``parts`` in order, without ``documents`` (each part numbers its own)."""
        return Chunks(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("input_ids", "attention_mask", "word_ids")))


@dataclass(frozen=True)
class ChunkedSplit:
    """Training and held-out chunks of a corpus held in memory."""

    train: Chunks
    eval: Chunks
    eval_documents: int
    documents: int
    held_out: np.ndarray | None = None  # the held-out documents' numbers (among non-empty documents)


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
                    remainder: str, rows: np.ndarray | None = None, *, with_documents: bool = False) -> Chunks:
    """``[CLS] body [SEP]`` chunks of the stream "doc SEP doc SEP ..." over ``docs``;
    ``with_documents``: with each position's document and the words the chunk's edges cut
    (``Chunks.documents``, ``Chunks.cut``).

    Only the chunks numbered ``rows`` (all by default) are built, straight from the
    flat token arrays: memory follows the chunks kept, not the corpus size (a
    200 MB file needed 10 GB when the whole stream was materialised first).
    """
    rows = np.arange(count_chunks(tokens, docs, chunk_size, remainder)) if rows is None else np.asarray(rows)
    layout, frame = _layout(tokens, docs), frame_ids(tokenizer)
    numbering = np.asarray(docs, dtype=np.int64) if with_documents else None
    names = ("input_ids", "attention_mask", "word_ids") + (("documents", "cut") if with_documents else ())
    out = Chunks(*(np.empty((len(rows), chunk_size), dtype=np.int64) for _ in range(3)),
                 *((np.empty((len(rows), chunk_size), dtype=np.int64), np.empty((len(rows), chunk_size), dtype=bool))
                   if with_documents else ()))
    # A block of rows at a time: one pass over every row allocated ~5x the output in
    # temporaries, whose first-touch page faults were half of chunking's time.
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        block = _chunk_rows(tokens, layout, rows[start:start + ROWS_PER_BLOCK], chunk_size, frame, numbering)
        for name in names:
            getattr(out, name)[start:start + len(block)] = getattr(block, name)
    return out


def _chunk_rows(tokens: TokenizedCorpus, layout: "_Layout", rows: np.ndarray, chunk_size: int,
                frame: tuple[int, int, int], numbering: np.ndarray | None) -> Chunks:
    cls_id, sep_id, pad_id = frame
    body = chunk_size - 2
    position = rows[:, None] * body + np.arange(body)[None, :]
    inside = position < layout.stream
    source, is_sep, doc = _locate(tokens, layout, np.minimum(position, max(layout.stream - 1, 0)))
    content = np.where(is_sep, sep_id, _at(tokens.ids, source))
    special = is_sep | _at(tokens.special, source) | ~inside
    starts = is_sep | _at(tokens.word_starts, source)
    words = np.cumsum(starts, axis=1)  # unique per word within a chunk, which is all masking needs
    words[special] = NO_WORD
    chunks = _frame(np.where(inside, content, pad_id), words, inside.sum(axis=1), cls_id, sep_id, pad_id)
    if numbering is None:
        return chunks
    documents = np.full(chunks.input_ids.shape, NO_DOCUMENT, dtype=np.int64)
    documents[:, 1:-1] = numbering[doc]
    cut = np.zeros(chunks.input_ids.shape, dtype=bool)
    cut[:, 1:-1] = _cut_words(tokens, layout, rows[:, None] * body + body, starts, words)
    return Chunks(chunks.input_ids, chunks.attention_mask, chunks.word_ids, documents, cut)


def _cut_words(tokens: TokenizedCorpus, layout: "_Layout", following: np.ndarray, starts: np.ndarray,
               words: np.ndarray) -> np.ndarray:
    """Body positions of the words cut by the chunk's edges: the first word when the body
    opens on a non-start token, the last when the stream position ``following`` the body
    continues its word."""
    source, is_sep, _ = _locate(tokens, layout, np.minimum(following, max(layout.stream - 1, 0)))
    continues = (following < layout.stream) & ~(is_sep | _at(tokens.word_starts, source))
    opens_inside = (~starts[:, :1]) & (words[:, :1] != NO_WORD)
    closes_outside = continues & (words[:, -1:] != NO_WORD)
    return (opens_inside & (words == words[:, :1])) | (closes_outside & (words == words[:, -1:]))


@dataclass(frozen=True)
class _Layout:
    """Where the documents ``docs`` sit in the stream "doc SEP doc SEP ...": document d
    occupies positions [begin[d], end[d]); position end[d] is the separator before
    document d + 1; its position p is token p + shift[d] of the flat arrays."""

    begin: np.ndarray
    end: np.ndarray
    shift: np.ndarray
    stream: int


def _layout(tokens: TokenizedCorpus, docs: np.ndarray) -> _Layout:
    lengths = tokens.lengths()[docs]
    begin = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    return _Layout(begin, begin + lengths, tokens.offsets[docs] - begin, _stream_length(tokens, docs))


def _locate(tokens: TokenizedCorpus, layout: _Layout, position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For stream positions: the index into ``tokens.ids`` of each, whether it is a
    separator instead, and which of the layout's documents (or the separator) it is in."""
    doc = np.searchsorted(layout.begin, position, side="right") - 1
    is_sep = position >= layout.end[doc]
    source = position + layout.shift[doc]
    np.minimum(source, max(len(tokens.ids) - 1, 0), out=source)
    return source, is_sep, doc


def _at(values: np.ndarray, source: np.ndarray) -> np.ndarray:
    # Documents that tokenize to nothing leave no token to point at: only separators.
    return values[source] if values.size else np.zeros(source.shape, values.dtype)


def stream_tail(tokens: TokenizedCorpus, docs: np.ndarray, start: int, sep_id: int) -> TokenizedCorpus:
    """Stream positions ``start`` to the end as one document (separators become SEP tokens
    flagged special), so that chunking it followed by more documents continues the stream."""
    position = np.arange(start, _stream_length(tokens, docs))
    if position.size == 0:
        return TokenizedCorpus(np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, bool), np.zeros(2, np.int64))
    source, is_sep, _ = _locate(tokens, _layout(tokens, docs), position)
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
        sides.append(chunk_documents(tokens, docs, config.chunk_size, tokenizer, config.remainder, rows,
                                     with_documents=side == "evaluation"))
    logging.getLogger(__name__).info("held out %d of %d documents", len(eval_docs), tokens.num_documents)
    return ChunkedSplit(train=sides[0], eval=sides[1], eval_documents=len(eval_docs), documents=tokens.num_documents,
                        held_out=eval_docs)

