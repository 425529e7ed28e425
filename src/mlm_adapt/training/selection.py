"""Which evaluated model a run saves, and when it stops early: pure functions of the run's
history, so a resumed run decides exactly as an uninterrupted one.

``--select last`` (the default, as the Trainer's ``load_best_model_at_end=False``) saves the
last step: its held-out perplexity is an honest estimate, because nothing was chosen on the
held-out set. ``--select best`` saves the evaluation with the lowest held-out perplexity;
``--max-forgetting PCT`` (with ``--general-data``) the lowest among the evaluations whose
general-text perplexity rose at most PCT percent over the run's start. Choosing on the
held-out set makes the chosen perplexity slightly optimistic (the minimum of noisy
numbers); ``selection`` in metrics.json says what was chosen and how.

The selected model's weights are kept in ``OUTPUT/checkpoints/selected/`` whenever a new
evaluation becomes the selected one (``SELECTED_DIR``), so an interrupted run keeps them.
"""

from __future__ import annotations

from typing import Any

from mlm_adapt.config import Rule

SELECTED_DIR = "selected"


def within_forgetting(entry: dict[str, Any], before: dict[str, Any], limit: float | None) -> bool:
    """Whether an evaluation's general-text perplexity rose at most ``limit`` percent."""
    if limit is None:
        return True
    return entry["general_perplexity"] <= before["general_perplexity"] * (1 + limit / 100)


def best_index(history: list[dict[str, Any]], before: dict[str, Any], limit: float | None) -> int | None:
    """Index of the lowest held-out perplexity among the evaluations within the forgetting
    limit (the earliest on a tie); None when none is."""
    allowed = [i for i, entry in enumerate(history) if within_forgetting(entry, before, limit)]
    return min(allowed, key=lambda i: (history[i]["perplexity"], i)) if allowed else None


def selected_index(history: list[dict[str, Any]], before: dict[str, Any], rule: Rule) -> tuple[int, bool]:
    """(index of the evaluation to save, whether it meets the rule). With no evaluation
    within the forgetting limit, the one whose general-text perplexity rose least."""
    if not rule.chooses:
        return len(history) - 1, True
    index = best_index(history, before, rule.max_forgetting)
    if index is not None:
        return index, True
    return min(range(len(history)), key=lambda i: (history[i]["general_perplexity"], i)), False


def evaluations_without_improvement(history: list[dict[str, Any]], before: dict[str, Any], rule: Rule) -> int:
    """Evaluations since the best one under the rule's forgetting limit (all of them if none
    qualifies): what ``--early-stop N`` compares with N."""
    index = best_index(history, before, rule.max_forgetting)
    return len(history) if index is None else len(history) - 1 - index


def selection_record(history: list[dict[str, Any]], before: dict[str, Any], rule: Rule) -> dict[str, Any]:
    """metrics.json's ``selected_step`` and ``selection``."""
    index, satisfied = selected_index(history, before, rule)
    entry = history[index]
    record = {"selected_step": entry["step"], "selection": {
        "rule": rule.describe(), "select": rule.select, "max_forgetting": rule.max_forgetting,
        "step": entry["step"], "epoch": entry["epoch"], "perplexity": entry["perplexity"],
        "last_step": history[-1]["step"], "satisfied": satisfied}}
    if not satisfied:
        record["selection"]["note"] = (f"no evaluation kept general-text perplexity within +{rule.max_forgetting:g}%: "
                                       "the one whose general-text perplexity rose least was saved")
    return record
