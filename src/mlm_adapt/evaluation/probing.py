"""Did adaptation help a task? A probe on labelled text, and a paired, calibrated comparison.

Every labelled example gets out-of-fold predictions: a stratified k-fold, repeated with
``seeds`` shuffles, in which texts that are the same up to case and white space form one
group that never spans train and test (scikit-learn's ``StratifiedGroupKFold``). The
frozen probe embeds each text once (mean of the last hidden states over real tokens) and
fits a logistic regression on standardised features, its regularisation chosen by an
inner cross-validation (``LogisticRegressionCV``); ``--finetune`` fine-tunes a classifier
instead (``finetuning``). Two models are compared on the same examples and folds: the
difference in accuracy and macro-F1 with a paired interval (``paired_tests``: a group
bootstrap over examples for the frozen probe, the corrected repeated k-fold t over test
folds for ``--finetune``), and "significant" only where the interval excludes 0.
benchmarks/probe_calibration.py measures how often it says so when the two models are
equally good (docs/statistics.md). Texts a model trained on are left out (``leakage``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mlm_adapt.data.duplicates import duplicate_groups
from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation import provenance
from mlm_adapt.evaluation.embeddings import embed
from mlm_adapt.evaluation.labelled import MIN_PER_CLASS, labelled_texts, sample
from mlm_adapt.evaluation.leakage import found_in, partition

# Below this many distinct texts no verdict is drawn: the folds' differences say little,
# as intervals over under ~20 held-out documents do (intervals.MIN_DOCUMENTS).
MIN_GROUPS_FOR_VERDICT = 20


@dataclass(frozen=True)
class ProbeScores:
    """A model's out-of-fold predictions on the tested rows (one row per repeat) and the
    scores they give; ``extra_training``: rows in every training fold besides the tested
    rows of the other folds (rows the models trained on, ``leakage``)."""

    model: str
    truth: np.ndarray
    predicted: np.ndarray  # [repeats, examples]
    classes: list[str]
    fold: np.ndarray  # [repeats, examples]: the fold that tested each example
    extra_training: int = 0

    def per_fold(self, metric: str) -> np.ndarray:
        """``metric`` ("accuracy" or "macro_f1") on each test fold of each repeat, in order."""
        values = []
        for predicted, fold in zip(self.predicted, self.fold):
            for f in np.unique(fold):
                rows = fold == f
                values.append(float(np.mean(predicted[rows] == self.truth[rows])) if metric == "accuracy"
                              else macro_f1(self.truth[rows], predicted[rows], len(self.classes)))
        return np.array(values)

    @property
    def accuracy(self) -> list[float]:  # one per repeat
        return [float(np.mean(row == self.truth)) for row in self.predicted]

    @property
    def macro_f1(self) -> list[float]:
        return [macro_f1(self.truth, row, len(self.classes)) for row in self.predicted]

    def summary(self) -> dict:
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        truth = np.tile(self.truth, len(self.predicted))
        pooled = self.predicted.reshape(-1)
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, pooled, labels=range(len(self.classes)), zero_division=0)
        return {"model": self.model, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "accuracy_mean": float(np.mean(self.accuracy)), "accuracy_std": _spread(self.accuracy),
                "macro_f1_mean": float(np.mean(self.macro_f1)), "macro_f1_std": _spread(self.macro_f1),
                "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                                     "support": int(s) // len(self.predicted)}
                              for name, p, r, f, s in zip(self.classes, precision, recall, f1, support)},
                "confusion": confusion_matrix(truth, pooled, labels=range(len(self.classes))).tolist()}


def _spread(values: list[float]) -> float:
    """Sample standard deviation (ddof=1) over repeats; 0 for one repeat (no spread measured)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fold_splits(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) rows of a stratified k-fold in which no group spans train and test, seeded."""
    from sklearn.model_selection import StratifiedGroupKFold

    for c in np.unique(labels):
        distinct = len(np.unique(groups[labels == c]))
        if distinct < folds:
            raise MlmAdaptError(f"--label-column: class {int(c)} has {distinct} distinct texts, too few for "
                                f"{folds} folds; lower --folds or add labelled rows")
    state = int(generator(seed, Salt.PROBE_SPLIT).integers(2**31 - 1))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=state)
    return [(np.sort(train), np.sort(test)) for train, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def out_of_fold(labels: np.ndarray, groups: np.ndarray, seeds: list[int], folds: int, predict,
                extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each tested example's prediction in each repeat (one k-fold per seed over the rows of
    ``labels``) from ``predict(train_rows, test_rows, seed) -> test predictions``, and the fold
    that tested it: two [len(seeds), examples] arrays. ``extra``: rows (numbered after the
    tested ones) added to every training fold and never tested."""
    extra = np.zeros(0, dtype=np.int64) if extra is None else extra
    predicted = np.full((len(seeds), len(labels)), -1)
    fold = np.full((len(seeds), len(labels)), -1)
    for r, seed in enumerate(seeds):
        for f, (train, test) in enumerate(fold_splits(labels, groups, folds, seed)):
            predicted[r, test], fold[r, test] = predict(np.concatenate([train, extra]), test, seed), f
    return predicted, fold


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, train_groups: np.ndarray) -> np.ndarray:
    """Logistic regression on standardised features, its L2 strength chosen by a 3-fold inner
    cross-validation on the training rows (grouped like the outer folds)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    smallest = min(len(np.unique(train_groups[train_y == c])) for c in np.unique(train_y))
    inner = StratifiedGroupKFold(n_splits=max(2, min(3, smallest)))
    splits = list(inner.split(train_x, train_y, train_groups))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 1, 6), cv=splits,
                                                                 scoring="neg_log_loss", max_iter=1000))
    # One BLAS thread: lbfgs's small matrix-vector products ran 29x slower on two OpenBLAS
    # threads than on one (2,000 x 384 mean-pooled vectors: 3.7 s against 0.13 s for the six Cs).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9's notices of changing defaults
        model.fit(train_x, train_y)
    return model.predict(test_x)


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, labels=range(classes), average="macro", zero_division=0))


def score(features: np.ndarray, labels: np.ndarray, seeds: list[int], folds: int, name: str,
          groups: np.ndarray | None = None, classes: list[str] | None = None, tested: int | None = None) -> ProbeScores:
    """The frozen probe's out-of-fold scores for ``features`` (one row per labelled row): the
    first ``tested`` rows (all by default) are tested; the rest only ever train."""
    groups = np.arange(len(labels)) if groups is None else groups
    tested = len(labels) if tested is None else tested
    predicted, fold = out_of_fold(labels[:tested], groups[:tested], seeds, folds,
                                  lambda train, test, seed: fit_predict(features[train], labels[train], features[test], groups[train]),
                                  np.arange(tested, len(labels)))
    return ProbeScores(name, labels[:tested], predicted, classes or [str(c) for c in range(int(labels.max()) + 1)], fold,
                       len(labels) - tested)


def majority_baseline(labels: np.ndarray, groups: np.ndarray, seeds: list[int], folds: int, classes: list[str],
                      tested: int | None = None) -> ProbeScores:
    """What always answering each training fold's most frequent class scores, on the same folds."""
    tested = len(labels) if tested is None else tested
    predicted, fold = out_of_fold(labels[:tested], groups[:tested], seeds, folds,
                                  lambda train, test, seed: np.full(len(test), np.bincount(labels[train]).argmax()),
                                  np.arange(tested, len(labels)))
    return ProbeScores("majority class", labels[:tested], predicted, classes, fold, len(labels) - tested)


TESTS = {"bootstrap": "group bootstrap", "corrected-t": "corrected repeated k-fold t"}


def compare(first: ProbeScores, second: ProbeScores, groups: np.ndarray, level: float = 0.95,
            baseline: ProbeScores | None = None, test: str = "bootstrap", seed: int = 0) -> dict:
    """``second`` minus ``first`` in accuracy and macro-F1 on the same examples and folds,
    with a paired interval (``paired_tests``): ``test`` "bootstrap" (over groups of examples:
    the frozen probe, a stable learner) or "corrected-t" (over folds: fine-tuning).
    "significant" only where the interval excludes 0; no verdict at all (None) with fewer
    than MIN_GROUPS_FOR_VERDICT groups of examples, or where neither model's accuracy beats
    ``baseline`` (the majority class): two probes that learned nothing differ only in how
    their classifiers fail (a macro-F1 "difference" between two collapsed classifiers)."""
    from mlm_adapt.evaluation.paired_tests import corrected_t, group_bootstrap

    def intervals(a: ProbeScores, b: ProbeScores) -> dict[str, tuple[float, float, float]]:
        if test == "bootstrap":
            return group_bootstrap(a, b, groups, level, seed)
        return {metric: corrected_t(a, b, metric, level) for metric in ("accuracy", "macro_f1")}

    out = {"test": TESTS[test], "level": level, "groups": int(len(np.unique(groups)))}
    reason = None
    if out["groups"] < MIN_GROUPS_FOR_VERDICT:
        reason = f"only {out['groups']} distinct texts (a verdict needs {MIN_GROUPS_FOR_VERDICT})"
    elif baseline is not None and not any(intervals(baseline, model)["accuracy"][0] > 0 for model in (first, second)):
        reason = "neither model beats the majority class"
    for metric, (low, mean, high) in intervals(first, second).items():
        per_repeat = np.array(getattr(second, metric)) - np.array(getattr(first, metric))
        out[metric] = {"difference": mean, "interval": [low, high],
                       "significant": None if reason else bool(low > 0 or high < 0),
                       "difference_mean": float(per_repeat.mean()), "difference_std": _spread(list(per_repeat))}
    if reason:
        out["no_verdict"] = reason
    return out


@dataclass(frozen=True)
class ProbeRows:
    """The labelled rows a probe uses, shared by every model it compares: the first ``tested``
    rows are tested (out of fold), the rest only ever train; ``groups`` are their duplicate
    groups; ``seeds`` the k-fold repeats."""

    texts: list[str]
    labels: np.ndarray
    names: list[str]
    groups: np.ndarray
    tested: int
    seeds: list[int]
    folds: int
    leakage: dict

    @property
    def extra(self) -> np.ndarray:
        return np.arange(self.tested, len(self.labels))


def probe_rows(config, seen: set[str] | None = None, trained_on=None, held_out: np.ndarray | None = None,
               held_out_rows: np.ndarray | None = None) -> ProbeRows:
    """The rows a ``ProbeConfig`` probes: rows whose text a compared model trained on are never
    tested, only trained on (``leakage``): those its folder records (``provenance``: a run's
    corpora, a blend's models, what they started from), ``seen`` (normalised texts), and
    ``trained_on``, the ``DataConfig`` of a training corpus (less its ``held_out`` documents or
    stream rows). Where a ``--tapt`` run adapted on this very data, only the rows it held back
    are tested."""
    texts, labels, names = labelled_texts(config)
    found = [corpus for model in config.models for corpus in provenance.corpora(model.model)]
    if trained_on is not None:
        found.append(provenance.TrainedCorpus(trained_on, frozenset(() if held_out is None else held_out.tolist()),
                                              frozenset(() if held_out_rows is None else held_out_rows.tolist())))
    seen = set(seen or ()) | found_in(found, texts)
    # Each class needs a testable row in every fold (and a few, to test on at all).
    testable, leakage = partition(texts, labels, names, seen, provenance.held_back_rows(found, config.data, texts),
                                  max(MIN_PER_CLASS, config.fold_count()))
    rows, tested = sample(testable, config)
    texts = [texts[i] for i in rows]
    return ProbeRows(texts, labels[rows], names, duplicate_groups(texts), tested,
                     [config.seed + i for i in range(config.repeats())], config.fold_count(), leakage)


def model_scores(config, model_config, rows: ProbeRows, loaded: dict | None = None) -> ProbeScores:
    """One model's out-of-fold scores on ``rows``: the frozen probe on its embeddings, or
    ``--finetune``'s fine-tuned classifiers."""
    from mlm_adapt.evaluation.finetuning import finetuner
    from mlm_adapt.modeling.loading import load_model, load_tokenizer

    labels, tested = rows.labels, rows.tested
    if config.finetune:
        predict = finetuner(model_config, rows.texts, labels, config)
        predicted, fold = out_of_fold(labels[:tested], rows.groups[:tested], rows.seeds, rows.folds, predict, rows.extra)
        return ProbeScores(model_config.model, labels[:tested], predicted, rows.names, fold, len(rows.extra))
    model, tokenizer = (loaded or {}).get(model_config.model) or (load_model(model_config), load_tokenizer(model_config))
    features = embed(model, tokenizer, rows.texts, config.max_length, precision=config.precision)
    return score(features, labels, rows.seeds, rows.folds, model_config.model, rows.groups, rows.names, tested)


def probe(config, loaded: dict | None = None, seen: set[str] | None = None, trained_on=None,
          held_out: np.ndarray | None = None, held_out_rows: np.ndarray | None = None) -> dict:
    """Run a ``ProbeConfig``: scores per model (out-of-fold, mean and spread over repeats),
    the majority-class baseline, and with two models their paired comparison, on the rows
    :func:`probe_rows` leaves testable. ``loaded`` maps a model name of ``config.models`` to a
    (model, tokenizer) already in memory (a run's trained model)."""
    rows = probe_rows(config, seen, trained_on, held_out, held_out_rows)
    tested, groups = rows.tested, rows.groups
    results = [model_scores(config, model_config, rows, loaded) for model_config in config.models]
    baseline = majority_baseline(rows.labels, groups, rows.seeds, rows.folds, rows.names, tested)
    report = {"mode": "fine-tuned" if config.finetune else "frozen", "classes": rows.names, "rows": tested,
              "training_only_rows": len(rows.extra), "seeds": rows.seeds, "folds": rows.folds,
              "groups": int(len(np.unique(groups[:tested]))),
              "baseline": {"accuracy": float(np.mean(baseline.accuracy)), "macro_f1": float(np.mean(baseline.macro_f1))},
              "models": [r.summary() for r in results], "leakage": {**rows.leakage, "tested_rows": tested}}
    if len(results) == 2:
        report["comparison"] = compare(*results, groups[:tested], baseline=baseline,
                                       test="corrected-t" if config.finetune else "bootstrap", seed=config.seed)
    return report
