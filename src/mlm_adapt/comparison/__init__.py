"""``mlm-adapt compare``: which recipe pays on a task, and would it pay again? Recipes x
training seeds, every run a plain ``train`` run folder (``runs``), every model measured on
one shared split (``measurement``), verdicts by the Multi-Bootstrap (``verdicts``).

May import: every stage below, ``recipes`` included; only ``cli`` imports it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlm_adapt import recipes as recipe_modules
from mlm_adapt.comparison import measurement, runs, verdicts
from mlm_adapt.comparison.shared_data import held_out_texts, overlap, picks
from mlm_adapt.config import CompareConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.recipes import Inputs, Recipe
from mlm_adapt.system.runtime import make_accelerator
from mlm_adapt.training.state import Timer

log = logging.getLogger("mlm_adapt")
RESULT = "compare.json"


def _checked_recipes(config: CompareConfig) -> tuple[Recipe, ...]:
    """The recipes, each with the inputs it needs (refused before anything is written)."""
    found = recipe_modules.parse(",".join(config.recipes))
    have = {name for name, given in (("data", config.domain), ("task", config.run.task_data), ("pool", config.pool)) if given}
    for recipe in found:
        recipe.check(have)
    if config.folder.exists() and not config.folder.is_dir():
        raise MlmAdaptError(f"--output {config.folder} is a file, not a folder")
    return found


def plan(config: CompareConfig, found: tuple[Recipe, ...], picked: Path | None) -> list[runs.PlannedRun]:
    """Every recipe's run for every training seed."""
    planned = []
    for recipe in found:
        for seed in config.training_seeds():
            inputs = Inputs(config.run_for(recipe.name, seed, recipe.lora), config.domain, picked)
            planned.append(runs.PlannedRun(recipe.name, seed, tuple(recipe.stages(inputs))))
    return planned


def _measured_run(config: CompareConfig):
    """The run whose held-out documents every model is measured on: DAPT's (the domain corpus
    less the task's held-back rows), or TAPT's without --data."""
    inputs = Inputs(config.run_for("measured", 1, False), config.domain)
    return inputs.dapt() if config.domain is not None else inputs.tapt()


def compare(config: CompareConfig) -> dict[str, Any]:
    """Train (or collect) every recipe x seed run, measure them and the base on one split, and
    return (and write to ``DIR/compare.json``) the verdicts; with ``config.plan``, only write
    each run's options and return the commands that train them."""
    timer = Timer()
    found = _checked_recipes(config)
    accelerator, _ = make_accelerator(config.run.precision)
    measured = _measured_run(config)
    with timer.spend("measurement"):
        prepared = measurement.shared_split(measured, accelerator)
    picked = None
    if any("pool" in r.needs for r in found):
        with timer.spend("select"):
            picked = picks(config, prepared, measured)
    planned = plan(config, found, picked)
    states = runs.check_folders(planned)  # a run on another split is refused before any training
    if config.plan:
        return {"plan": runs.write_plan(planned, config.folder), "folder": str(config.folder)}
    for run in planned:
        for stage in run.stages:
            with timer.spend("training"):
                runs.train_stage(stage, states[stage.output])
    return _measure_and_judge(config, planned, prepared, measured, accelerator, timer)


def _measure_and_judge(config, planned, prepared, measured, accelerator, timer) -> dict[str, Any]:
    base = config.run.model.model
    with timer.spend("measurement"):
        probe, rows = measurement.task_rows(config, [base, *(str(r.folder) for r in planned)])
        shared = measurement.Shared(measured, prepared, rows, probe)
        batch = config.run.evaluation_batch_size()
        scores = config.folder / "scores"
        base_tables = measurement.measure(base, shared, scores / "base.npz", batch, accelerator)
        tables: dict[str, dict[int, dict]] = {}
        for run in planned:
            tables.setdefault(run.recipe, {})[run.seed] = measurement.measure(
                str(run.folder), shared, scores / run.recipe / f"seed-{run.seed}.npz", batch, accelerator)
    with timer.spend("statistics"):
        seed = config.split_seed()
        judged = {name: verdicts.against_base(base_tables, by_seed, seed) for name, by_seed in tables.items()}
        result = {
            "base": base, "split_seed": seed, "seeds": list(config.training_seeds()), "steps": config.run.max_steps,
            "tested_rows": rows.tested if rows is not None else 0, "task_data": config.run.task_data,
            "domain_data": config.domain.data if config.domain else None, "general_data": config.run.general_data,
            "held_out_documents": int(prepared.data.eval_documents), "probe": "fine-tuned" if config.finetune else "frozen",
            "recipes": {name: {"runs": [{"seed": r.seed, "folder": str(r.folder)} for r in planned if r.recipe == name],
                               **judged[name]} for name in tables},
            "pairs": verdicts.pairs(tables, seed),
            "recommendation": verdicts.recommend(judged, config.max_forgetting),
            "max_forgetting": config.max_forgetting,
            "domain_overlap": overlap(held_out_texts(measured, prepared), {r.recipe: str(r.folder) for r in planned if r.seed == 1}),
        }
    result["seconds"] = timer.breakdown()
    _write(config.folder, result)
    return result


def _write(folder: Path, result: dict[str, Any]) -> None:
    """compare.json (whole or not at all) and report.html."""
    from mlm_adapt.outputs.comparison_report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{RESULT}.tmp"
    partial.write_text(json.dumps(result, indent=1), encoding="utf-8")
    partial.replace(folder / RESULT)
    write_report(folder / "report.html", result)
    log.info("comparison written to %s (%.0f s)", folder / RESULT, result["seconds"]["total"])
