"""How often the held-out perplexity interval covers the true perplexity, by the number of
held-out documents: the simulation behind intervals.MIN_DOCUMENTS.

Documents differ (each has its own mean NLL, a log-normal spread of difficulty) and have
different lengths; tokens within a document are noisy around its mean. The "true"
perplexity is the population's token-weighted exp(mean NLL), estimated from 200,000
documents. Each trial draws N documents, masks their tokens (pieces, one per
document), runs ``intervals.perplexity_interval`` with the documents as clusters, and
checks whether the interval holds the truth.

Usage:  python benchmarks/interval_coverage.py [--trials 1000] [--documents 5,8,12,20,50,200]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt.evaluation.intervals import perplexity_interval  # noqa: E402


def documents(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL, masked tokens) of ``count`` documents."""
    tokens = np.maximum(1, rng.lognormal(mean=3.0, sigma=0.8, size=count).astype(int))  # ~20 masked tokens, skewed
    level = rng.normal(5.0, 0.6, size=count)  # each document's own difficulty (mean NLL)
    nll = rng.normal(level * tokens, 2.0 * np.sqrt(tokens))  # token noise around it
    return nll, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--documents", default="5,8,12,20,30,50,200")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/interval-coverage.json"))
    args = parser.parse_args()
    population_nll, population_tokens = documents(200_000, np.random.default_rng(0))
    truth = float(np.exp(population_nll.sum() / population_tokens.sum()))
    report = {"trials": args.trials, "nominal": 0.95, "true_perplexity": truth, "coverage": {}}
    for count in map(int, args.documents.split(",")):
        covered = 0
        for trial in range(args.trials):
            nll, tokens = documents(count, np.random.default_rng([1, count, trial]))
            low, high = perplexity_interval(nll, tokens, seed=trial, groups=np.arange(count))
            covered += low <= truth <= high
        report["coverage"][count] = covered / args.trials
        print(f"{count:>4} documents: coverage {covered / args.trials:.3f}", flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
