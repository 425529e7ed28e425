"""Tokenizing documents into flat arrays: token ids, word starts, special flags, offsets.

Documents are tokenized once, without special tokens or truncation, by the Rust
tokenizer called directly, and cached on disk keyed by the data's fingerprint and the
tokenizer. Everything after this stage (``chunking``) is array arithmetic.

The Rust tokenizer is most of the time (docs/performance.md), so the Python side
asks it for as little as it needs: for a WordPiece tokenizer with BERT's
pre-tokenizer, ids only (``encode_batch_fast``, no offsets or word ids), with word
starts read off a per-id table of "##" continuation pieces; for any other tokenizer,
the word ids it computes. ``num_workers`` spreads the batches over processes for
corpora too big for one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from mlm_adapt.errors import MlmAdaptError

if TYPE_CHECKING:
    from mlm_adapt.data.corpus import Corpus

CACHE_VERSION = "v3"  # bump when the arrays a cache file holds change meaning
CONTINUATION = "##"  # WordPiece's word-continuing pieces
SPACE_MARKER = "Ġ"  # byte-level BPE's leading space


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
class TextEncoder:
    """The Rust tokenizer, called directly, and the ids that are never words.

    transformers' wrapper would convert every encoding to Python lists first (and
    warn about documents longer than model_max_length, which chunking expects). The
    Rust tokenizer already uses every core (TOKENIZERS_PARALLELISM).
    """

    backend: Any
    special_ids: np.ndarray  # every id in tokenizer.all_special_ids, [UNK] included
    continuation: np.ndarray | None  # bool per id: a "##" piece; None: ask the tokenizer for word ids

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TextEncoder":
        backend = plain_backend(tokenizer)
        special = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int32)
        return cls(backend, special, continuation_table(backend))

    def encode(self, texts: list[str]) -> TokenizedCorpus:
        """One batch of texts as flat arrays; blank texts are skipped (they are not documents)."""
        texts = [t for t in texts if t.strip()]
        if self.continuation is not None:
            encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        else:
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(offsets[-1]))
        # A literal "[MASK]" or "<mask>" can come back with a word id, and [UNK] always does
        # (the model, not the added-token layer, produces it): the ids decide, as in the
        # course's collator, so none of them is ever chosen for masking or used as a label.
        special = np.isin(ids, self.special_ids)
        if self.continuation is not None:
            starts = ~self.continuation[ids]
        else:
            special, starts = _word_id_starts(encodings, special)
        starts[special] = True
        starts[offsets[:-1][lengths > 0]] = True  # a document's first token starts a word
        return TokenizedCorpus(ids, starts, special, offsets)


def _word_id_starts(encodings: list, special: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(special, word starts) from the tokenizer's word ids: None (an added special token
    in the text) becomes NaN in a float array, so no per-token Python; float32 holds word
    indices exactly up to 2**24 words per document."""
    word_ids = np.array(list(chain.from_iterable(e.word_ids for e in encodings)), dtype=np.float32)
    starts = np.ones(len(word_ids), dtype=bool)
    starts[1:] = word_ids[1:] != word_ids[:-1]  # NaN != NaN: specials start their own "word"
    return special | np.isnan(word_ids), starts


def continuation_table(backend) -> np.ndarray | None:
    """Whether each id is a WordPiece continuation piece ("##ing"), where that alone says
    which tokens start words; None for any other tokenizer.

    Only with BERT's pre-tokenizer: it splits "#" off as punctuation, so a word's first
    piece can never be looked up as "##..." (a whitespace-only pre-tokenizer would let a
    literal "##ing" in the text start a word with a continuation piece). An added token
    spelt "##..." would be both (a whole word when the text spells it, a piece inside
    other words), so it too sends the encoder to word ids.
    """
    spec = json.loads(backend.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece" or pre.get("type") != "BertPreTokenizer":
        return None
    prefix = model.get("continuing_subword_prefix") or CONTINUATION
    if any(token.content.startswith(prefix) for token in backend.get_added_tokens_decoder().values()):
        return None
    table = np.zeros(backend.get_vocab_size(with_added_tokens=True), dtype=bool)
    for token, index in backend.get_vocab(with_added_tokens=False).items():
        table[index] = token.startswith(prefix)
    return table


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


def select_documents(tokens: TokenizedCorpus, keep: np.ndarray) -> TokenizedCorpus:
    """The documents of ``tokens`` where ``keep`` (a bool per document) holds, in order."""
    lengths = tokens.lengths()[keep]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.repeat(keep, tokens.lengths())  # each token's document kept or not
    return TokenizedCorpus(tokens.ids[positions], tokens.word_starts[positions], tokens.special[positions], offsets)


def plain_backend(tokenizer):
    """A copy of the Rust tokenizer without the padding and truncation a tokenizer.json
    may carry (sentence-transformers files pad and cut every text to 128 tokens):
    transformers' wrapper overrides them on every call, a direct call would not."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def encode_batches(encoder: TextEncoder, batches: Iterable[list[str]], num_workers: int = 0) -> Iterator[TokenizedCorpus]:
    """Each batch of texts tokenized, in order: the same arrays whatever ``num_workers``.

    0 tokenizes here (the Rust tokenizer already spreads a batch over every core). N > 0
    tokenizes in N processes, each single-threaded, so the Python half of the work
    (reading texts, encodings to arrays) runs in parallel too; at most two batches per
    worker are in flight, so a stream is read no further ahead than that.
    """
    if num_workers == 0:
        yield from map(encoder.encode, batches)
        return
    # spawn: forking a process whose torch or tokenizer threads are running can deadlock.
    with ProcessPoolExecutor(num_workers, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(encoder,)) as pool:
        pending: deque[Future] = deque()
        for texts in batches:
            pending.append(pool.submit(_encode_in_worker, texts))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_WORKER_ENCODER: TextEncoder | None = None


def _start_worker(encoder: TextEncoder) -> None:
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the workers fill the cores
    _WORKER_ENCODER = encoder


def _encode_in_worker(texts: list[str]) -> TokenizedCorpus:
    return _WORKER_ENCODER.encode(texts)


def tokenize_corpus(corpus: "Corpus", tokenizer, cache_dir: Path | None = None, batch_size: int = 1_000,
                    num_workers: int = 0) -> TokenizedCorpus:
    """Tokenize every non-empty document; reuse ``cache_dir`` when the same data and tokenizer were seen."""
    if not getattr(tokenizer, "is_fast", False):
        raise MlmAdaptError("this tokenizer has no fast (Rust) version; mlm-adapt needs one for word ids")
    path = _cache_path(corpus, tokenizer, cache_dir)
    if path is not None and path.exists():
        with np.load(path) as cached:
            return TokenizedCorpus(cached["ids"], cached["word_starts"], cached["special"], cached["offsets"])
    tokens = _tokenize(corpus, tokenizer, batch_size, num_workers)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=tokens.ids, word_starts=tokens.word_starts, special=tokens.special, offsets=tokens.offsets)
        os.replace(tmp, path)
    return tokens


def _tokenize(corpus: "Corpus", tokenizer, batch_size: int, num_workers: int) -> TokenizedCorpus:
    encoder = TextEncoder.from_tokenizer(tokenizer)
    tokens = concat_tokens(list(encode_batches(encoder, corpus.batches(batch_size), num_workers)))
    if tokens.ids.size == 0:
        raise MlmAdaptError(f"--data {corpus.source}: the corpus is empty (no document holds any text)")
    return tokens


def _cache_path(corpus: "Corpus", tokenizer, cache_dir: Path | None) -> Path | None:
    fingerprint = getattr(corpus.dataset, "_fingerprint", None)
    if cache_dir is None or fingerprint is None:
        return None
    key = hashlib.sha256()
    for part in (fingerprint, corpus.column, tokenizer.backend_tokenizer.to_str(), CACHE_VERSION):
        key.update(part.encode())
    return Path(cache_dir) / f"{key.hexdigest()[:32]}.npz"


def token_bytes(tokenizer) -> np.ndarray:
    """UTF-8 bytes of text each token id stands for, markers ("##", the leading-space
    "Ġ") and special tokens counting 0: what bits-per-byte divides by."""
    size = len(tokenizer)
    counts = np.zeros(size, dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    byte_level = _is_byte_level(tokenizer)
    for token, index in tokenizer.get_vocab().items():
        if index >= size or index in special:
            continue
        if byte_level:  # each character of a byte-level token is one byte of text
            counts[index] = len(token.removeprefix(SPACE_MARKER))
        else:
            counts[index] = len(token.removeprefix(CONTINUATION).encode("utf-8"))
    return counts


def _is_byte_level(tokenizer) -> bool:
    """Whether the pre-tokenizer (or one in its sequence) is byte-level, as RoBERTa's."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    return '"ByteLevel"' in json.dumps(pre)
