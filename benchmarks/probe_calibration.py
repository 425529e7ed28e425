"""How often the probe's paired comparison says "significant" when nothing differs, and
how often it does when something does: the error rate its 95% interval claims (5%).

Each trial draws a labelled dataset and two encoders' features, then runs what
``mlm-adapt probe --compare`` runs on them (out-of-fold predictions from a repeated
stratified group k-fold, logistic regression with inner-CV regularisation, the paired
group-bootstrap interval): ``probing.score`` for each, ``probing.compare`` on the pair.

``accuracy`` and ``macro_f1`` are the frozen probe's verdicts (the group bootstrap of
``paired_tests``); ``corrected_t`` is the corrected repeated k-fold t (what ``--finetune``
uses) on the same trials, for comparison.

Scenarios (features stand in for mean-pooled embeddings; labels depend on a few directions):
  null-copy     the second encoder is the first plus tiny independent noise (equally good)
  null-twin     two independently drawn encoders of equal quality (the same signal strength)
  null-random   random labels: neither encoder can predict them
  real          the second encoder carries a stronger signal (reported as power)

``--training-only N`` adds N rows to every trial that only ever train the classifiers (the
rows a compared model adapted on, under the probe's protocol: ``leakage``); the ``--rows``
are the tested ones.

Usage:  python benchmarks/probe_calibration.py [--trials 200] [--rows 300] [--training-only 0] [--processes 2]
            [--out benchmarks/probe-calibration.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")  # one thread per worker process: the processes fill the cores

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt.evaluation import probing  # noqa: E402

DIMENSIONS = 16


def draw(scenario: str, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, first encoder's features, second encoder's features) of one trial."""
    labels = rng.integers(0, 2, rows)
    signal = np.zeros((rows, DIMENSIONS))
    signal[:, 0] = labels * 2 - 1

    def encoder(strength: float) -> np.ndarray:
        return strength * signal + rng.normal(size=(rows, DIMENSIONS))

    if scenario == "null-copy":
        first = encoder(0.6)
        return labels, first, first + rng.normal(scale=0.05, size=first.shape)
    if scenario == "null-twin":
        return labels, encoder(0.6), encoder(0.6)
    if scenario == "null-random":
        return rng.permutation(labels), encoder(0.6), encoder(0.6)
    return labels, encoder(0.6), encoder(0.9)  # real


def trial(scenario: str, rows: int, seed: int, training_only: int = 0) -> dict:
    """One trial: ``rows`` tested rows, and ``training_only`` more that every training fold holds."""
    labels, first, second = draw(scenario, rows + training_only, np.random.default_rng([seed, rows, training_only]))
    seeds, folds, groups = [seed, seed + 1], 5, np.arange(rows + training_only)
    a = probing.score(first, labels, seeds, folds, "first", groups, ["0", "1"], tested=rows)
    b = probing.score(second, labels, seeds, folds, "second", groups, ["0", "1"], tested=rows)
    baseline = probing.majority_baseline(labels, groups, seeds, folds, ["0", "1"], tested=rows)
    comparison = probing.compare(a, b, groups[:rows], baseline=baseline, seed=seed)  # what `probe --compare` runs
    reference = probing.compare(a, b, groups[:rows], baseline=baseline, test="corrected-t")  # what --finetune runs
    # No verdict (None: neither model beats the majority class) is not a "significant".
    return {metric: bool(comparison[metric]["significant"]) for metric in ("accuracy", "macro_f1")} | {
        "corrected_t": bool(reference["accuracy"]["significant"]),
        "difference": comparison["accuracy"]["difference"], "no_verdict": "no_verdict" in comparison}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--training-only", type=int, default=0)
    parser.add_argument("--scenarios", default="null-copy,null-twin,null-random,real")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/probe-calibration.json"))
    args = parser.parse_args()
    report = {"trials": args.trials, "rows": args.rows, "training_only": args.training_only, "level": 0.95, "scenarios": {}}
    for scenario in args.scenarios.split(","):
        began = time.perf_counter()
        with multiprocessing.Pool(args.processes) as pool:
            results = pool.starmap(trial, [(scenario, args.rows, seed, args.training_only) for seed in range(args.trials)])
        rate = {m: float(np.mean([r[m] for r in results])) for m in ("accuracy", "macro_f1", "corrected_t")}
        withheld = float(np.mean([r["no_verdict"] for r in results]))
        # A binomial 95% band around the observed rate: how far 200 trials can pin it down.
        band = {m: 1.96 * np.sqrt(rate[m] * (1 - rate[m]) / args.trials) for m in rate}
        report["scenarios"][scenario] = {"significant_rate": rate, "binomial_half_width": band, "no_verdict_rate": withheld,
                                         "mean_difference": float(np.mean([r["difference"] for r in results])),
                                         "seconds": time.perf_counter() - began}
        print(scenario, json.dumps(report["scenarios"][scenario]), flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
