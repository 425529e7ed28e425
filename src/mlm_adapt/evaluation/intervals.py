"""Bootstrap intervals for perplexities over held-out documents, seeded and pure.

A held-out set's masked tokens are grouped into *pieces*: the run of one document's
tokens within one chunk. A cluster bootstrap then draws whole documents (all their
pieces, wherever chunking cut them) with replacement: tokens of one document are
correlated, so resampling chunks or tokens one by one understates the spread.
"""

from __future__ import annotations

import numpy as np

from mlm_adapt.data.seeding import Salt, generator

# Below this many held-out documents a cluster bootstrap's "95%" interval covers far less
# (simulated: 92% at 20 documents, 84% at 8; benchmarks/interval_coverage.py,
# docs/statistics.md): its interval is shown as unreliable and no verdict is drawn from it.
MIN_DOCUMENTS = 20


def documents_resampled(resamples: str) -> int:
    """The documents an interval resampled, from its ``interval_resamples`` ("N documents",
    or "N chunks" where it fell back to chunks: 0)."""
    count, unit = resamples.split()
    return int(count) if unit == "documents" else 0


def interval_caveat(resamples: str) -> str | None:
    """What a reader must know about an interval over ``resamples`` before trusting it."""
    documents = documents_resampled(resamples)
    if documents == 0:
        return (f"resampled {resamples}, not documents (fewer than two held-out documents): "
                "not a 95% interval, and no verdict")
    if documents < MIN_DOCUMENTS:
        return (f"only {documents} held-out documents: the interval is unreliable (a 95% interval needs about "
                f"{MIN_DOCUMENTS}), and no verdict")
    return None


def pieces(token_nll: np.ndarray, masked: np.ndarray,
           documents: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(NLL, masked tokens, document, row) of each run of masked positions that one
    document fills within one row, in row order; ``documents`` None: one piece per row
    (document None). A cluster bootstrap over documents then draws each document's text
    whole, wherever the chunking cut it, instead of counting each chunk for one document."""
    if documents is None:
        return token_nll.sum(axis=1), masked.sum(axis=1), None, np.arange(len(masked))
    row, column = np.nonzero(masked)
    document = documents[row, column]
    starts = np.ones(len(row), dtype=bool)
    starts[1:] = (row[1:] != row[:-1]) | (document[1:] != document[:-1])
    piece = np.cumsum(starts) - 1
    return (np.bincount(piece, token_nll[row, column]), np.bincount(piece).astype(np.int64), document[starts],
            row[starts])


def perplexity_interval(row_nll: np.ndarray, row_tokens: np.ndarray, seed: int, *, level: float = 0.95,
                        resamples: int = 1000, baseline: np.ndarray | None = None,
                        groups: np.ndarray | None = None) -> tuple[float, float]:
    """A percentile-bootstrap interval for the perplexity over held-out rows (chunks, or
    the pieces of chunks :func:`pieces` cuts), seeded. With ``baseline`` (another model's
    ``row_nll`` on the same masked rows) it is for the ratio of perplexities, this /
    baseline, resampling the rows together: the paired comparison before/after needs.

    ``groups`` (each row's document): whole groups are drawn with replacement (a cluster
    bootstrap), since chunks cut from one document are correlated and resampling them one
    by one understates the spread. Fewer than two groups: the rows are resampled."""
    names, group = np.unique(groups, return_inverse=True) if groups is not None else ((), None)
    if len(names) >= 2:
        row_nll, row_tokens = np.bincount(group, row_nll), np.bincount(group, row_tokens)
        baseline = None if baseline is None else np.bincount(group, baseline)
    rng = generator(seed, Salt.BOOTSTRAP, len(row_nll))
    picks = rng.integers(0, len(row_nll), size=(resamples, len(row_nll)))
    tokens = np.maximum(row_tokens[picks].sum(axis=1), 1)
    log_ppl = row_nll[picks].sum(axis=1) / tokens
    if baseline is not None:
        log_ppl = log_ppl - baseline[picks].sum(axis=1) / tokens
    tail = (1 - level) / 2
    low, high = np.quantile(log_ppl, [tail, 1 - tail])
    return float(np.exp(low)), float(np.exp(high))
