"""How often does a verdict call two equally good recipes different? The Multi-Bootstrap
(``evaluation.multibootstrap``, what ``mlm-adapt compare`` reports) beside a single run's
paired row bootstrap (what one ``train --task-data`` run reports), on simulated per-row
predictions with a seed-level effect; and the power of each for a real difference.

The simulation, fitted to the demo's figures (docs/statistics.md): ``rows`` tested rows, a
row's difficulty z ~ N(mu, 1) shared by every model; a model is right on a row when
z + u + e > 0, with u ~ N(effect, seed_sd) drawn once per trained model (its seed) and
e ~ N(0, row_sd) per row and model (how two models disagree on a row). mu, row_sd and seed_sd
are set so that accuracy is ~0.76, one run's paired 95% half-width ~0.011 on 2,000 rows and
the accuracy's spread over seeds ~0.01, as measured on the demo's TAPT runs.

Usage:  python benchmarks/multibootstrap_calibration.py [--trials 400] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt.evaluation.multibootstrap import SeedTables, accuracy, multibootstrap  # noqa: E402

ROWS, MU, ROW_SD, SEED_SD = 2000, 0.73, 0.25, 0.04


def predictions(z: np.ndarray, rng: np.random.Generator, seeds: int, effect: float) -> np.ndarray:
    """[seeds, rows] correctness of ``seeds`` trained models of one recipe."""
    u = rng.normal(effect, SEED_SD, size=(seeds, 1))
    return (z[None, :] + u + rng.normal(0, ROW_SD, size=(seeds, len(z))) > 0).astype(np.float64)


def tables(correct: np.ndarray) -> SeedTables:
    return SeedTables(tuple(range(len(correct))), np.stack([correct, np.ones_like(correct)], axis=-1))


def trial(rng: np.random.Generator, seeds: int, effect: float, resamples: int) -> dict[str, bool | float]:
    """Recipe B (``effect`` on the latent scale) against recipe A, ``seeds`` each."""
    z = rng.normal(MU, 1, ROWS)
    a, b = predictions(z, rng, seeds, 0.0), predictions(z, rng, seeds, effect)
    draw = int(rng.integers(1 << 30))
    multi = multibootstrap(tables(a), tables(b), accuracy, resamples=resamples, seed=draw)
    plain = multibootstrap(tables(a), tables(b), accuracy, resamples=resamples, seed=draw, small_sample=False)
    single = multibootstrap(tables(a[:1]), tables(b[:1]), accuracy, resamples=resamples, seed=int(rng.integers(1 << 30)))
    half = (single["interval"][1] - single["interval"][0]) / 2
    return {"multi": multi["holds"], "plain": plain["holds"], "single": single["holds"], "single_half_width": half,
            "accuracy": float(a.mean()), "seed_sd": float(a.mean(axis=1).std(ddof=1)) if seeds > 1 else float("nan")}


def rate(hits: list[bool]) -> dict[str, float]:
    p = float(np.mean(hits))
    half = 1.96 * np.sqrt(p * (1 - p) / len(hits))
    return {"rate": p, "interval": [max(0.0, p - half), min(1.0, p + half)]}


def scenario(seeds: int, effect: float, trials: int, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    results = [trial(rng, seeds, effect, resamples) for _ in range(trials)]
    return {"seeds": seeds, "latent_effect": effect,
            "accuracy_difference": float(norm.cdf(MU / np.hypot(1, np.hypot(ROW_SD, SEED_SD)) + effect) - norm.cdf(MU / np.hypot(
                1, np.hypot(ROW_SD, SEED_SD)))),
            "multibootstrap_says_different": rate([r["multi"] for r in results]),
            "plain_multibootstrap_says_different": rate([r["plain"] for r in results]),
            "single_run_says_significant": rate([r["single"] for r in results]),
            "fitted": {"accuracy": float(np.mean([r["accuracy"] for r in results])),
                       "single_run_half_width": float(np.mean([r["single_half_width"] for r in results])),
                       "seed_sd": float(np.nanmean([r["seed_sd"] for r in results]))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seeds", default="3,5,10")
    parser.add_argument("--effect", type=float, default=0.07, help="latent effect of the power scenarios (~2 accuracy points)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/multibootstrap-calibration.json"))
    args = parser.parse_args()
    began = time.perf_counter()
    report = {"machine": platform.processor() or platform.machine(), "trials": args.trials, "resamples": args.resamples,
              "rows": ROWS, "null": [], "power": []}
    for k in (int(s) for s in args.seeds.split(",")):
        report["null"].append(scenario(k, 0.0, args.trials, args.resamples, seed=k))
        report["power"].append(scenario(k, args.effect, args.trials, args.resamples, seed=1000 + k))
        print(json.dumps({"null": report["null"][-1], "power": report["power"][-1]}), flush=True)
    report["seconds"] = time.perf_counter() - began
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
