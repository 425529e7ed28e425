"""Paired intervals for the difference between two models' out-of-fold scores on the same
examples: pure functions of their predictions (``probing.ProbeScores``), seeded.

- :func:`group_bootstrap`: a percentile bootstrap over groups of examples (duplicate texts
  form one group), each example's correctness averaged over the repeats; macro-F1 recomputed
  on every resample. It sees the sampling noise of the test examples, not how the fitted
  classifiers vary, which is right for a stable learner: measured on the frozen probe's
  logistic regression (benchmarks/probe_calibration.py, 200 trials each), it called 4.5%
  and 3.5% of two null scenarios significant, inside the 2-8% a 95% test should give.
- :func:`corrected_t`: the corrected repeated k-fold t interval (Nadeau & Bengio 2003;
  Bouckaert & Frank 2004) over the per-fold differences, inflated for the training sets
  the folds share: what a fine-tuned classifier (an unstable learner, whose own variance a
  bootstrap over examples leaves out) needs. On the frozen probe it is conservative (0.5-2%).
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 2000


def corrected_t(first, second, metric: str, level: float) -> tuple[float, float, float]:
    """(low, mean, high): the corrected repeated k-fold t interval of ``second - first``."""
    from scipy.stats import t as student

    folds = len(np.unique(first.fold[0]))
    diff = second.per_fold(metric) - first.per_fold(metric)
    mean, variance = float(diff.mean()), float(np.var(diff, ddof=1)) if len(diff) > 1 else 0.0
    # Nadeau & Bengio's n_test / n_train, 1 / (k - 1) for a k-fold, stands for how much the
    # training folds overlap. Rows that only train (the models adapted on them) sit in every
    # training fold: they make the folds' fitted models more alike, not less, so they must not
    # shrink the correction. Counting them (n_test / (n_train + extra)) called equally good
    # encoders different in 10% of 200 trials with 600 such rows (docs/statistics.md).
    test_to_train = 1 / (folds - 1)
    half = float(student.ppf((1 + level) / 2, max(len(diff) - 1, 1)) * np.sqrt((1 / len(diff) + test_to_train) * variance))
    return mean - half, mean, mean + half


def _counts(scores, groups: np.ndarray, classes: int) -> np.ndarray:
    """Per group: correct predictions, and per repeat and class the true positives, false
    positives and false negatives, flattened to one row of sums per group."""
    unique, index = np.unique(groups, return_inverse=True)
    predicted, truth = scores.predicted, scores.truth[None, :]
    columns = [(predicted == truth).sum(axis=0)]
    for c in range(classes):
        for indicator in ((predicted == c) & (truth == c), (predicted == c) & (truth != c), (predicted != c) & (truth == c)):
            columns.extend(indicator)  # one column per repeat
    table = np.stack(columns, axis=1).astype(np.float64)
    sums = np.zeros((len(unique), table.shape[1]))
    np.add.at(sums, index, table)
    return sums


def _metrics(sums: np.ndarray, sizes: np.ndarray, repeats: int, classes: int) -> dict[str, np.ndarray]:
    """Accuracy and macro-F1 (mean over repeats) of resampled sums (rows: resamples)."""
    accuracy = sums[:, 0] / (sizes * repeats)
    counts = sums[:, 1:].reshape(len(sums), classes, 3, repeats)
    tp, fp, fn = counts[:, :, 0], counts[:, :, 1], counts[:, :, 2]
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {"accuracy": accuracy, "macro_f1": f1.mean(axis=1).mean(axis=1)}


def group_bootstrap(first, second, groups: np.ndarray, level: float, seed: int,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, tuple[float, float, float]]:
    """Per metric, (low, difference, high): ``second - first`` on all examples and the
    percentile interval over ``resamples`` resamples of the groups (both models together)."""
    classes, repeats = len(first.classes), len(first.predicted)
    a, b = _counts(first, groups, classes), _counts(second, groups, classes)
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1]).astype(np.float64)
    draws = np.random.default_rng([seed, 9]).multinomial(len(sizes), np.full(len(sizes), 1 / len(sizes)), size=resamples)
    whole = {k: v[0] for k, v in _metrics(np.stack([b.sum(0)]), np.array([sizes.sum()]), repeats, classes).items()}
    start = {k: v[0] for k, v in _metrics(np.stack([a.sum(0)]), np.array([sizes.sum()]), repeats, classes).items()}
    drawn_b = _metrics(draws @ b, draws @ sizes, repeats, classes)
    drawn_a = _metrics(draws @ a, draws @ sizes, repeats, classes)
    tail = (1 - level) / 2 * 100
    out = {}
    for metric in ("accuracy", "macro_f1"):
        low, high = np.percentile(drawn_b[metric] - drawn_a[metric], [tail, 100 - tail])
        out[metric] = (float(low), float(whole[metric] - start[metric]), float(high))
    return out
