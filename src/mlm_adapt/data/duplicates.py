"""Duplicate documents: copies up to case and white space (``normalised``,
``duplicate_groups``), and near duplicates, found as corpus deduplication finds them:
each document is the set of its word n-grams ("shingles"), near duplicates are documents
whose sets overlap by a Jaccard similarity of at least ``THRESHOLD``, and MinHash
signatures with locality-sensitive hashing (datasketch) find the candidate pairs without
comparing every pair (Broder 1997; the scheme of text-dedup and datatrove).
"""

from __future__ import annotations

import re

import numpy as np

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# Word 3-grams, not the 5-grams web-scale deduplication uses: a 25-word review and its copy
# with one word changed in the middle share a Jaccard similarity of 0.62 at 5 words a
# shingle (under the threshold), 0.77 at 3 (a changed word spoils n shingles of 26 - n).
SHINGLE_WORDS = 3
THRESHOLD = 0.7  # text-dedup's default similarity for a near duplicate
NUM_PERM = 128  # permutations a signature: the estimated Jaccard's standard error is <= 0.045
SEED = 1
RECALL_WEIGHTS = (0.05, 0.95)


def normalised(text: str) -> str:
    """A text as duplicates are found: case and runs of white space ignored."""
    return _SPACE.sub(" ", text).strip().lower()


def duplicate_groups(texts: list[str]) -> np.ndarray:
    """A group number per text; texts equal up to case and white space share one."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(normalised(t), len(seen)) for t in texts])


def shingles(text: str, most: int | None = None) -> list[bytes] | None:
    """The word ``SHINGLE_WORDS``-grams of ``text``, case and punctuation aside; a shorter
    text (or an empty one) is one shingle, itself. With ``most``: None as soon as there are
    more distinct ones than that (a long document is not read to its end)."""
    words = _WORD.findall(text.lower())
    if len(words) <= SHINGLE_WORDS:
        return [" ".join(words).encode()]
    found: set[bytes] = set()
    for i in range(len(words) - SHINGLE_WORDS + 1):
        found.add(" ".join(words[i:i + SHINGLE_WORDS]).encode())
        if most is not None and len(found) > most:
            return None
    return list(found)


def near_duplicate_groups(texts: list[str], threshold: float = THRESHOLD) -> np.ndarray:
    """A group number per text: texts joined by a chain of pairs whose estimated Jaccard
    similarity of shingles is at least ``threshold`` share one (copies up to case, white
    space and punctuation always do: their signatures are equal)."""
    from datasketch import MinHash, MinHashLSH

    signatures = MinHash.bulk((shingles(t) for t in texts), num_perm=NUM_PERM, seed=SEED)
    index = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    parent = np.arange(len(texts))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the chains short
            i = parent[i]
        return int(i)

    for i, signature in enumerate(signatures):
        for j in index.query(signature):  # candidates from the bands; confirmed on the whole signature
            if signature.jaccard(signatures[j]) >= threshold:
                parent[root(i)] = root(j)
        index.insert(i, signature)
    return np.array([root(i) for i in range(len(texts))], dtype=np.int64)


class CopyFinder:
    """Which texts copy one of ``originals``, exactly (``normalised``) or nearly (an estimated
    Jaccard similarity of shingles of at least ``threshold``): how a task's texts are kept out
    of the documents picked to train on. Holds the originals' signatures and an LSH index,
    nothing of the texts it is asked about."""

    def __init__(self, originals: list[str], threshold: float = THRESHOLD):
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self.exact = {normalised(t) for t in originals}
        sets = [shingles(t) for t in originals]
        self.sizes = np.sort([len(s) for s in sets])
        self.signatures = MinHash.bulk(sets, num_perm=NUM_PERM, seed=SEED)
        # Bands tuned for recall (datasketch's weights of false positives and false negatives):
        # a copy the index misses is picked, while a false candidate costs one comparison of
        # signatures. The default (0.5, 0.5) missed one of five texts with one word in 30 changed.
        self.index = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=RECALL_WEIGHTS)
        for i, signature in enumerate(self.signatures):
            self.index.insert(i, signature)

    def copies(self, texts: list[str]) -> np.ndarray:
        """A bool per text: it copies an original."""
        from datasketch import MinHash

        found = np.array([normalised(t) in self.exact for t in texts], dtype=bool)
        candidates: dict[int, list[bytes]] = {}
        # Jaccard(A, B) <= min(|A|, |B|) / max(|A|, |B|): a text whose shingle count is that far
        # from every original's cannot be a near copy, and needs no signature; a long document
        # against short task texts is not even read to its end.
        most = int(self.sizes[-1] / self.threshold) if len(self.sizes) else 0
        for i in np.flatnonzero(~found):
            words = shingles(texts[i], most)
            if words is None:
                continue
            low = np.searchsorted(self.sizes, len(words) * self.threshold, side="left")
            if np.searchsorted(self.sizes, len(words) / self.threshold, side="right") > low:
                candidates[int(i)] = words
        signatures = MinHash.bulk(candidates.values(), num_perm=NUM_PERM, seed=SEED)
        for i, signature in zip(candidates, signatures):
            found[i] = any(signature.jaccard(self.signatures[j]) >= self.threshold for j in self.index.query(signature))
        return found
