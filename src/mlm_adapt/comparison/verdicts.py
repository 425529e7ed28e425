"""Verdicts from the measured tables: each recipe against the base and each pair of recipes,
by the Multi-Bootstrap over training seeds and rows (``evaluation.multibootstrap``), with
each seed's single-run result beside it (rows resampled alone, as one run's paired test
does), and the recommendation."""

from __future__ import annotations

import itertools
import math

import numpy as np

from mlm_adapt.evaluation.multibootstrap import SeedTables, accuracy, log_perplexity, macro_f1, multibootstrap

# What a comparison reports, its tables' name and statistic; perplexities are compared in
# log space (a ratio), the task's scores as differences.
MEASURES = {"task": ("accuracy", accuracy), "macro_f1": ("macro_f1", macro_f1),
            "domain_perplexity": ("domain", log_perplexity), "general_perplexity": ("general", log_perplexity)}


def _sides(tables: dict[int, dict], name: str) -> SeedTables | None:
    seeds = sorted(tables)
    if not seeds or name not in tables[seeds[0]]:
        return None
    return SeedTables(tuple(seeds), np.stack([tables[s][name] for s in seeds]))


def _verdict(measure: str, low: float, high: float) -> str:
    if measure in ("task", "macro_f1"):
        return "helps" if low > 0 else "hurts" if high < 0 else "no measurable difference"
    return "lower" if high < 0 else "higher" if low > 0 else "no measurable change"


def _as_reported(measure: str, result: dict, seed_names: list[int]) -> dict:
    """A Multi-Bootstrap result as compare.json reports it: perplexities as ratios."""
    low, high = result["interval"]
    out = {"verdict": _verdict(measure, low, high), "ahead": result["ahead"], "paired_by_seed": result["paired_by_seed"]}
    if measure in ("task", "macro_f1"):
        out.update(difference=result["difference"], interval=[low, high])
        out["per_seed"] = [{"seed": s, "difference": d} for s, d in zip(seed_names, result["per_seed"])]
    else:  # "ahead" for a perplexity is the share of seeds on which it came out lower
        out.update(ratio=math.exp(result["difference"]), interval=[math.exp(low), math.exp(high)],
                   ahead=1 - result["ahead"])
        out["per_seed"] = [{"seed": s, "ratio": math.exp(d)} for s, d in zip(seed_names, result["per_seed"])]
    return out


def _single_runs(measure: str, base: SeedTables, side: SeedTables, statistic, seed: int) -> list[dict]:
    """Each seed's run against the base with rows resampled alone: the one-run verdict."""
    found = []
    for index, name in enumerate(side.seeds):
        one = SeedTables((name,), side.tables[index:index + 1])
        found.append(_as_reported(measure, multibootstrap(base, one, statistic, seed=seed), [name]))
    return [{"seed": name, **{k: v for k, v in run.items() if k not in ("per_seed", "paired_by_seed", "ahead")}}
            for name, run in zip(side.seeds, found)]


def against_base(base: dict, runs: dict[int, dict], seed: int) -> dict:
    """One recipe's runs (tables by training seed) against the base, measure by measure."""
    out = {}
    base_tables = {0: base}
    for measure, (name, statistic) in MEASURES.items():
        first, second = _sides(base_tables, name), _sides(runs, name)
        if first is None or second is None:
            continue
        result = multibootstrap(first, second, statistic, seed=seed)
        out[measure] = {**_as_reported(measure, result, list(second.seeds)),
                        "single_runs": _single_runs(measure, first, second, statistic, seed)}
    return out


def between(first: dict[int, dict], second: dict[int, dict], seed: int) -> dict:
    """Recipe ``second`` minus recipe ``first``, paired by seed where they share their seeds."""
    out = {}
    for measure, (name, statistic) in MEASURES.items():
        a, b = _sides(first, name), _sides(second, name)
        if a is not None and b is not None:
            out[measure] = _as_reported(measure, multibootstrap(a, b, statistic, seed=seed), list(b.seeds))
    return out


def pairs(recipes: dict[str, dict[int, dict]], seed: int) -> list[dict]:
    """Every pair of recipes, the later listed minus the earlier."""
    return [{"first": a, "second": b, **between(recipes[a], recipes[b], seed)}
            for a, b in itertools.combinations(recipes, 2)]


def recommend(verdicts: dict[str, dict], max_forgetting: float | None) -> dict:
    """The recipe with the largest task gain whose interval leaves out 0 and whose general-text
    perplexity rose at most ``max_forgetting`` percent (its mean over seeds), or none."""
    eligible = []
    for name, verdict in verdicts.items():
        task = verdict.get("task")
        if task is None or task["verdict"] != "helps":
            continue
        rise = (verdict["general_perplexity"]["ratio"] - 1) * 100 if "general_perplexity" in verdict else None
        if max_forgetting is not None and rise is not None and rise > max_forgetting:
            continue
        eligible.append((task["difference"], name))
    if not any(v.get("task") for v in verdicts.values()):
        return {"recipe": None, "reason": "no --task-data: no task to recommend a recipe for"}
    if not eligible:
        limit = f" with general-text perplexity within +{max_forgetting:g}%" if max_forgetting is not None else ""
        return {"recipe": None, "reason": f"none of these helps this task measurably at this budget{limit}"}
    gain, name = max(eligible)
    return {"recipe": name, "reason": f"the largest task gain ({gain:+.3f}) whose interval over seeds and rows excludes 0"
                                      + (f", forgetting within +{max_forgetting:g}%" if max_forgetting is not None else "")}
