"""The Multi-Bootstrap (Sellam et al., "The MultiBERTs", ICLR 2022): is a difference a
property of the *procedure* (a recipe, whatever seed it is trained with) or of one trained
artifact? Pure, seeded functions of per-seed, per-group score tables.

What it resamples, and why. A recipe's score on a task has two sources of noise: which test
examples were drawn (the rows) and how the run happened to train (the seed: order, masks,
dropout, new weights). A single run's paired test resamples rows only, so it answers "is
*this model* better on this population of rows?"; two equally good recipes then differ
"significantly" about half the time once the seed spread is as large as the row noise
(docs/statistics.md). Here every bootstrap replicate draws

- the rows: groups of rows (duplicate texts, or a held-out document's pieces) with
  replacement, one draw shared by everything compared, since all models were scored on the
  same rows (paired by row);
- the seeds: each recipe's training seeds with replacement; two recipes that share their
  seed list get one draw for both (paired by seed, as MultiBERTs' paired case), otherwise
  each its own. A model with one "seed" (the base) is fixed.

and the statistic is the mean over the drawn seeds of each seed's score on the drawn rows,
minus the same for the other side. The percentile interval of the replicates is the
interval; a difference "holds" only where it leaves out 0. With few seeds the plain seed
draw is too narrow (3 seeds give 10 distinct multisets, and the bootstrap's variance is
(S - 1) / S of the sample's): each seed's deviation from the seeds' mean (on all rows) is
first widened so that the seed part of the interval is as wide as Student's t with S - 1
degrees of freedom (:func:`small_sample_scale`). benchmarks/multibootstrap_calibration.py measures how often
equally good recipes are then called different (docs/statistics.md).

Scores are additive: each group contributes a row of sums (correct predictions and rows;
NLL and tokens; per-class true/false positives and false negatives) and a statistic maps
summed columns to a value, so a replicate is a weighted sum, not a loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

RESAMPLES = 2000
Statistic = Callable[[np.ndarray], np.ndarray]  # summed columns [..., columns] -> value [...]


@dataclass(frozen=True)
class SeedTables:
    """One recipe's (or the base's) scores: ``tables[s, g]`` is the row of sums of seed
    ``seeds[s]`` on group ``g``; every side compared has the same groups in the same order."""

    seeds: tuple[int, ...]
    tables: np.ndarray  # [seeds, groups, columns]

    def __post_init__(self) -> None:
        if self.tables.ndim != 3 or len(self.seeds) != len(self.tables):
            raise ValueError("tables must be [seeds, groups, columns], one table per seed")


def accuracy(sums: np.ndarray) -> np.ndarray:
    """Columns (correct, rows) -> accuracy."""
    return sums[..., 0] / np.maximum(sums[..., 1], 1e-12)


def log_perplexity(sums: np.ndarray) -> np.ndarray:
    """Columns (NLL, tokens) -> NLL per token (the log of perplexity)."""
    return sums[..., 0] / np.maximum(sums[..., 1], 1e-12)


def macro_f1(sums: np.ndarray) -> np.ndarray:
    """Columns (tp, fp, fn) per class, flattened -> macro-F1 (a class with no support and no
    prediction scores 0, as scikit-learn's ``zero_division=0``)."""
    counts = sums.reshape(*sums.shape[:-1], -1, 3)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=np.float64), where=denominator > 0)
    return f1.mean(axis=-1)


def _per_seed(side: SeedTables, weights: np.ndarray, statistic: Statistic) -> np.ndarray:
    """[replicates, seeds]: each seed's statistic on each replicate's weighted groups."""
    return statistic(np.einsum("rg,sgc->rsc", weights, side.tables))


def small_sample_scale(seeds: int, level: float) -> float:
    """How far each seed's deviation from the seeds' mean is scaled before seeds are drawn:
    t(seeds - 1) / z * sqrt(seeds / (seeds - 1)). The bootstrap mean of S draws from S values
    has variance (S - 1) / S * s^2 / S and normal-like tails; scaled, its seed part has the
    width of Student's t interval, s / sqrt(S) * t(S - 1). Unscaled, 3 seeds called equally
    good recipes different in 15% of simulated trials (benchmarks/multibootstrap_calibration.py)."""
    from scipy.stats import norm, t

    if seeds < 2:
        return 1.0
    tail = (1 + level) / 2
    return float(t.ppf(tail, seeds - 1) / norm.ppf(tail) * np.sqrt(seeds / (seeds - 1)))


def _seed_means(values: np.ndarray, draws: np.ndarray, whole: np.ndarray, scale: float) -> np.ndarray:
    """Mean over each replicate's drawn seeds (``draws``: [replicates, seeds] indices), each
    seed's deviation from the seeds' mean on all rows (``whole``: [seeds]) widened to
    ``scale`` times itself. The widening is fixed, measured on all rows: scaling each
    replicate's own deviations would scale its row noise too (equally good recipes were then
    called different in 0 of 300 simulated trials, against 5% for the t test on seeds)."""
    widened = values + (scale - 1) * (whole - whole.mean())[None, :]
    return np.take_along_axis(widened, draws, axis=1).mean(axis=1)


def multibootstrap(first: SeedTables, second: SeedTables, statistic: Statistic, *, level: float = 0.95,
                   resamples: int = RESAMPLES, seed: int = 0, small_sample: bool = True) -> dict:
    """``second`` minus ``first``: the mean over seeds of ``statistic`` on all rows, its
    Multi-Bootstrap percentile interval (seeds and row groups resampled together, see the
    module's docstring; ``small_sample``: seed deviations scaled by :func:`small_sample_scale`),
    the share of seed pairings on which ``second`` came out ahead, and each of ``second``'s
    seeds against ``first`` alone (against the same seed where paired)."""
    groups = first.tables.shape[1]
    if second.tables.shape[1] != groups:
        raise ValueError("both sides must be scored on the same groups")
    rng = np.random.default_rng([seed, 0x3B])
    weights = rng.multinomial(groups, np.full(groups, 1 / groups), size=resamples).astype(np.float64)
    paired = first.seeds == second.seeds and len(first.seeds) > 1
    draws_second = rng.integers(0, len(second.seeds), size=(resamples, len(second.seeds)))
    draws_first = draws_second if paired else rng.integers(0, len(first.seeds), size=(resamples, len(first.seeds)))
    scale = {n: small_sample_scale(n, level) if small_sample else 1.0 for n in (len(first.seeds), len(second.seeds))}
    drawn_second, drawn_first = _per_seed(second, weights, statistic), _per_seed(first, weights, statistic)
    whole = np.ones((1, groups))
    a, b = _per_seed(first, whole, statistic)[0], _per_seed(second, whole, statistic)[0]
    if paired:  # one seed draw for both: the per-seed differences are what is widened and drawn
        replicates = _seed_means(drawn_second - drawn_first, draws_second, b - a, scale[len(second.seeds)])
    else:
        replicates = _seed_means(drawn_second, draws_second, b, scale[len(second.seeds)]) - \
            _seed_means(drawn_first, draws_first, a, scale[len(first.seeds)])
    differences = b - a if paired else b[:, None] - a[None, :]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return {"difference": float(b.mean() - a.mean()), "interval": [float(low), float(high)],
            "holds": bool(low > 0 or high < 0), "ahead": float(np.mean(differences > 0)),
            "paired_by_seed": paired, "seeds": len(second.seeds), "level": level, "resamples": resamples,
            "per_seed": [float(d) for d in (differences if paired else b - a.mean())]}


def group_sums(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per-row columns [rows, columns] summed into groups [groups, columns], the groups in
    the order of ``np.unique(groups)``: one row of a :class:`SeedTables` table."""
    _, index = np.unique(groups, return_inverse=True)
    out = np.zeros((index.max() + 1, values.shape[1]))
    np.add.at(out, index, values)
    return out
