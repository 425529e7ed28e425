"""What changed, word by word: the masked-token NLL of two models on the same held-out
tokens and masks, summed per whole-word occurrence and pooled per word.

Every masked token belongs to one word of its chunk (special tokens are never masked),
so the words' NLLs add up to the set's total, for each model. A word cut by a chunk's
edge is a fragment ("##ing", or "walk" of "walking"): its tokens count in the totals
under ``cut_words``, never as a word of the lists. A word's change is the sum,
over its occurrences, of (model NLL - base NLL); its interval is a t interval of the mean
change per occurrence (occurrences of a word are treated as independent: an
approximation where one document repeats a word).

Words are ranked by their total change (what they add to the perplexity's change, so
frequent words lead: ",", "and", "the") or by their mean change per occurrence (how much
the word itself changed: "script", "thriller", "movie" on movie reviews), the latter among
words seen at least ``WORD_MIN_OCCURRENCES`` times.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mlm_adapt.config import WORD_MIN_OCCURRENCES, WordRanking, choices
from mlm_adapt.data.chunking import Chunks
from mlm_adapt.data.held_out import MaskedSet
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.errors import MlmAdaptError


@dataclass(frozen=True)
class Occurrences:
    """Rows of (base NLL, model NLL, masked tokens), one per occurrence (a word of a chunk
    with at least one masked token): per whole word's text, and for the words cut by a
    chunk's edges (whose text here is not the word's)."""

    words: dict[str, np.ndarray]
    cut: np.ndarray


def occurrences(base_nll: np.ndarray, model_nll: np.ndarray, masked: MaskedSet, chunks: Chunks, tokenizer) -> Occurrences:
    """Each masked token's NLLs summed per word occurrence. ``*_nll``: per-token NLL arrays
    shaped as ``masked.labels`` (zero where nothing is masked); ``chunks.cut`` (None: no
    word is cut) says which words the chunks' edges cut."""
    scored = masked.labels != IGNORE_INDEX
    sums: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row, position in zip(*np.nonzero(scored)):
        cell = sums[(int(row), int(chunks.word_ids[row, position]))]
        cell[0] += float(base_nll[row, position])
        cell[1] += float(model_nll[row, position])
        cell[2] += 1
    by_word: dict[str, list[list[float]]] = defaultdict(list)
    cut: list[list[float]] = []
    for (row, word), cell in sums.items():
        pieces = chunks.word_ids[row] == word
        if chunks.cut is not None and chunks.cut[row][pieces].any():
            cut.append(cell)
            continue
        by_word[tokenizer.decode(chunks.input_ids[row][pieces].tolist()).strip()].append(cell)
    return Occurrences({word: np.asarray(cells, dtype=np.float64) for word, cells in by_word.items()},
                       np.asarray(cut, dtype=np.float64).reshape(-1, 3))


def _word_row(word: str, cells: np.ndarray) -> dict[str, Any]:
    change = cells[:, 1] - cells[:, 0]
    count = len(cells)
    interval = None
    if count >= 2:
        half = stats.t.ppf(0.975, count - 1) * change.std(ddof=1) / np.sqrt(count)
        interval = [float(change.mean() - half), float(change.mean() + half)]
    return {"word": word, "count": count, "masked_tokens": int(cells[:, 2].sum()),
            "base_nll": float(cells[:, 0].sum()), "model_nll": float(cells[:, 1].sum()),
            "change": float(change.sum()), "mean_change": float(change.mean()), "mean_change_interval": interval}


def check_ranking(by: str) -> None:
    """Refuses a ranking that is not a ``WordRanking``."""
    if by not in choices(WordRanking):
        raise MlmAdaptError(f"--words-by must be {' or '.join(choices(WordRanking))}, not {by!r}")


def ledger(found: Occurrences, top: int, by: str = "total") -> dict[str, Any]:
    """The ``top`` whole words whose NLL fell most and rose most, ranked ``by`` "total"
    (summed change) or "mean" (change per occurrence, words seen ``WORD_MIN_OCCURRENCES``
    times or more), and the totals, which every word's and the cut words' NLLs add up to."""
    check_ranking(by)
    key, least = ("mean_change", WORD_MIN_OCCURRENCES) if by == "mean" else ("change", 1)
    rows = [_word_row(word, cells) for word, cells in found.words.items()]
    ranked = sorted((r for r in rows if r["count"] >= least), key=lambda r: (r[key], r["word"]))
    cut = found.cut
    return {
        "fell": [r for r in ranked[:top] if r[key] < 0],
        "rose": [r for r in reversed(ranked[-top:]) if r[key] > 0],
        "ranked_by": by,
        "min_occurrences": least,
        "words": len(rows),
        "occurrences": int(sum(r["count"] for r in rows)),
        "cut_words": {"occurrences": len(cut), "masked_tokens": int(cut[:, 2].sum()),
                      "base_nll": float(cut[:, 0].sum()), "model_nll": float(cut[:, 1].sum())},
        "base_nll": float(sum(r["base_nll"] for r in rows) + cut[:, 0].sum()),
        "model_nll": float(sum(r["model_nll"] for r in rows) + cut[:, 1].sum()),
    }


REPORT_WORDS = 15  # words per list in a run's metrics.json and report.html


def against_base(model, base, prepared, batch_size: int, accelerator, top: int = REPORT_WORDS,
                 scored: tuple[np.ndarray | None, np.ndarray | None] = (None, None)) -> dict[str, Any]:
    """A run's ledger: ``model`` (the saved one) against the ``base`` ``ModelConfig`` it
    started from, on the run's own held-out chunks and masks (``prepared``), ranked by total
    change, with the lists ranked by the mean change as ``mean_fell`` and ``mean_rose``.
    ``scored``: the (base, model) per-token NLLs where the run has them already (its first
    and its saved evaluation); a missing one is scored here."""
    from mlm_adapt.evaluation.perplexity import token_nll
    from mlm_adapt.modeling.loading import load_model
    from mlm_adapt.modeling.objective import MaskedLMObjective

    masked = prepared.eval_set
    base_nll, model_nll = scored
    if model_nll is None:
        model_nll = token_nll(accelerator.prepare(MaskedLMObjective(model, separator=prepared.separator)), masked, batch_size,
                              accelerator)
    if base_nll is None:
        base_model = load_model(base, packing=prepared.separator is not None)
        base_nll = token_nll(accelerator.prepare(MaskedLMObjective(base_model, separator=prepared.separator)), masked, batch_size,
                             accelerator)
    found = occurrences(base_nll, model_nll, masked, prepared.data.eval, prepared.tokenizer)
    by_mean = ledger(found, top, by="mean")
    return {**ledger(found, top), "mean_fell": by_mean["fell"], "mean_rose": by_mean["rose"]}
