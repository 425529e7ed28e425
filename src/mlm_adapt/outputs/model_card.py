"""The model card: ``README.md`` of a run's output, in the Hub's model-card format.

Its front matter (``huggingface_hub.ModelCardData``) names the base model, the data and
the results in model-index form (held-out perplexity, the forgetting check, the task
probe); its body says how the model was trained and whether adaptation helped. The
sentences and rows it shares with ``report.html`` and the terminal summary live here.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from mlm_adapt.system.disclosure import public_name


def model_card(config, metrics: dict[str, Any], probes: list[dict[str, Any]]) -> str:
    """``README.md`` for the output folder, with the Hub's YAML front matter; local
    paths appear by name only."""
    from huggingface_hub import EvalResult as HubEvalResult
    from huggingface_hub import ModelCard, ModelCardData

    base, data = public_name(config.model.model), public_name(config.data.data)
    is_hub_data = not Path(config.data.data).expanduser().exists()
    card_data = ModelCardData(
        base_model=base if not Path(config.model.model).expanduser().exists() else None,
        datasets=[data.partition(":")[0]] if is_hub_data else None,
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["mlm-adapt", "domain-adaptation", "masked-lm"],
        model_name=Path(config.output).name,
        eval_results=[HubEvalResult(
            task_type="fill-mask", dataset_type=data.partition(":")[0], dataset_name=data,
            metric_type="perplexity", metric_value=round(metrics["perplexity_after"], 4),
            metric_name="held-out perplexity",
        )] + _general_result(metrics, HubEvalResult) + _task_result(metrics, HubEvalResult),
    )
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{_card_body(config, metrics, probes)}"))


def _general_result(metrics: dict[str, Any], result_type) -> list:
    """The forgetting check in model-index: perplexity on the held-out general text."""
    if not metrics.get("general_data"):
        return []
    name = public_name(metrics["general_data"])
    return [result_type(task_type="fill-mask", dataset_type=name.partition(":")[0], dataset_name=name,
                        metric_type="perplexity", metric_value=round(metrics["general_perplexity_after"], 4),
                        metric_name="held-out perplexity, general text (forgetting check)")]


def _task_result(metrics: dict[str, Any], result_type) -> list:
    """The task probe in model-index: the adapted model's mean accuracy over the probe's seeds."""
    task = metrics.get("task_probe")
    if not task:
        return []
    name = public_name(task["data"])
    adapted = task["models"][-1]
    return [result_type(task_type="text-classification", dataset_type=name.partition(":")[0], dataset_name=name,
                        metric_type="accuracy", metric_value=round(adapted["accuracy_mean"], 4),
                        metric_name=f"{PROBE_MODES.get(task.get('mode'), PROBE_MODES['frozen'])[1]} accuracy, out of fold "
                                    f"({task.get('folds', '?')}-fold x {len(task['seeds'])})")]


def probe_rows(report: dict[str, Any], labels: tuple[str, str, str] | None = None) -> list[tuple[str, str, str]]:
    """(model, accuracy, macro-F1) rows of a ``probing.probe`` report: the majority-class
    baseline, each model (mean ± sample std over the k-fold's repeats), and with two models
    their paired difference with its 95% interval and verdict; ``labels`` name the two
    models and the difference (default: the models' names and "second - first")."""
    names = labels[:2] if labels else [m["model"] for m in report["models"]]
    rows = []
    if "baseline" in report:
        rows.append(("majority class", f"{report['baseline']['accuracy']:.3f}", f"{report['baseline']['macro_f1']:.3f}"))
    rows += [(name, f"{m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f}", f"{m['macro_f1_mean']:.3f} ± {m['macro_f1_std']:.3f}")
             for name, m in zip(names, report["models"])]
    if "comparison" not in report:
        return rows
    reason = report["comparison"].get("no_verdict")
    diff = [difference_text(report["comparison"][metric], reason) for metric in ("accuracy", "macro_f1")]
    return rows + [(labels[2] if labels else "second - first", *diff)]


def difference_text(comparison: dict[str, Any], reason: str | None = None) -> str:
    """A paired difference as people should read it: the interval, then the verdict it supports."""
    if "interval" not in comparison:  # a report written before intervals (exceeds_spread)
        return f"{comparison['difference_mean']:+.3f} (no interval: re-run the probe)"
    low, high = comparison["interval"]
    verdict = {True: "significant", False: "not significant", None: f"no verdict: {reason or 'too few examples'}"}[
        comparison["significant"]]
    return f"{comparison['difference']:+.3f} [{low:+.3f}, {high:+.3f}] ({verdict})"


def task_probe_rows(task: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A run's task probe (base model first) as ``probe_rows``."""
    return probe_rows(task, ("base model", "adapted model", "adapted - base"))


PROBE_MODES = {"frozen": ("Frozen-encoder probe (mean-pooled embeddings + logistic regression)", "frozen-encoder probe"),
               "fine-tuned": ("Fine-tuned probe (each model fine-tuned with a classification head)", "fine-tuned probe")}
# How each paired test pairs the two models' predictions (probing.TESTS names the tests).
PAIRINGS = {"group bootstrap": "over the same rows, resampled by duplicate group",
            "corrected repeated k-fold t": "by test fold"}


def task_probe_intro(task: dict[str, Any]) -> str:
    """What the probe was and how its difference was tested, from the report itself (its
    ``mode`` and ``comparison.test``), then what it left out of its tests."""
    what = PROBE_MODES.get(task.get("mode", "frozen"), PROBE_MODES["frozen"])[0]
    test = (task.get("comparison") or {}).get("test")
    paired = (f"; the difference is paired {PAIRINGS.get(test, '')}, with a 95% {test} interval, significant only if it "
              "excludes 0" if test else "")
    return (f"{what} on `{public_name(task['data'])}`: {task['rows']} labelled rows tested, {len(task['classes'])} classes "
            f"({', '.join(map(str, task['classes'][:6]))}), every row predicted out of fold ({task.get('folds', '?')} folds "
            f"x {len(task['seeds'])} repeats, duplicates kept on one side); mean ± std over the repeats{paired}."
            + leakage_text(task))


def leakage_text(task: dict[str, Any]) -> str:
    leak = task.get("leakage")
    if not leak or not leak.get("seen_rows"):
        return ""
    if leak["probed"] == "unseen":
        return (f" {leak['seen_rows']} labelled rows whose text the adaptation trained on were left out of the tests "
                f"({task.get('training_only_rows', 0)} of them trained the classifiers); "
                f"the probe tested {leak.get('tested_rows', leak['unseen_rows'])} others.")
    return (f" Warning: {leak['seen_rows']} of the labelled rows have texts the adaptation trained on, and too few "
            "others remain to leave them out: the adapted model has seen part of the test texts.")


def _card_body(config, metrics: dict[str, Any], probes: list[dict[str, Any]]) -> str:
    lines = [
        f"# {Path(config.output).name}",
        "",
        f"`{public_name(config.model.model)}` adapted to `{public_name(config.data.data)}` by continued masked-LM training with "
        f"[mlm-adapt](https://pypi.org/project/mlm-adapt/).",
        "",
        "## Training",
        "",
        f"- data: `{public_name(config.data.data)}` (split `{config.data.split}`, column `{config.data.text_column}`), "
        f"{metrics['train_chunks']} training chunks of {config.data.chunk_size} tokens; "
        f"{metrics['eval_chunks']} evaluation chunks from {metrics['eval_documents']} held-out documents",
        f"- masking: {config.masking.masking}, rate {config.masking.train_mask_prob()}; evaluation: "
        f"{config.masking.eval_masking} at {config.masking.eval_mask_prob}, masks fixed by seed {config.data_seed()}",
        f"- {metrics['steps']} optimizer steps, batch {config.batch_size} x {config.grad_accum}, lr {config.lr}, "
        f"weight decay {config.weight_decay}, warm-up {config.warmup_ratio}, precision {metrics['precision']}",
        f"- weights trained: {weights_trained_text(metrics)}",
        f"- saved model: {saved_step_text(metrics)}",
        f"- hardware: {platform.machine()} {platform.processor() or ''}, {metrics['train_runtime_seconds']:.0f} s "
        f"({metrics['train_samples_per_second']:.1f} samples/s)",
        "",
        "## Perplexity on held-out documents",
        "",
        "| | eval loss | perplexity |",
        "| --- | --- | --- |",
        *(f"| {when} | {metrics[f'eval_loss_{when}']:.4f} | "
          f"{with_interval_text(metrics[f'perplexity_{when}'], metrics[f'perplexity_{when}_interval'])} |" for when in ("before", "after")),
        "",
        verdict(metrics),
    ]
    if metrics.get("task_probe"):
        lines += ["", "## Did it help the task?", "", task_probe_intro(metrics["task_probe"]), "",
                  "| | accuracy | macro-F1 |", "| --- | --- | --- |"]
        lines += [f"| {' | '.join(row)} |" for row in task_probe_rows(metrics["task_probe"])]
    elif metrics.get("task_probe_error"):
        lines += ["", "## Did it help the task?", "", f"Not probed: {metrics['task_probe_error']}"]
    if metrics.get("added_tokens"):
        added = metrics["added_tokens"]
        lines += ["", "## Added vocabulary", "",
                  f"{len(added)} domain words were added as whole tokens, each initialised as the mean of its old "
                  f"pieces: {', '.join(a['token'] for a in added[:20])}{', ...' if len(added) > 20 else ''}. "
                  "Per-token perplexity is not comparable with a model that splits these words; per byte of masked "
                  f"text the held-out loss went from {metrics['bits_per_byte_before']:.4f} to "
                  f"{metrics['bits_per_byte_after']:.4f} bits."]
    if probes:
        lines += ["", "## Fill-mask, before and after", "", "| text | before | after |", "| --- | --- | --- |"]
        lines += [f"| {p['text']} | {', '.join(p['before'])} | {', '.join(p['after'])} |" for p in probes]
    lines += ["", "```python", "from transformers import pipeline", "",
              f'fill = pipeline("fill-mask", model="{Path(config.output).name}")', "```", ""]
    return "\n".join(lines)


def weights_trained_text(metrics: dict[str, Any]) -> str:
    """Which weights the run trained: all of them, or LoRA adapters (rank, targets), with counts."""
    share = f"{metrics.get('trainable_parameters', 0):,} of {metrics.get('total_parameters', 0):,}"
    lora = metrics.get("lora")
    if not lora:
        return f"all ({share})"
    extra = ", the MLM head and the embeddings tied to it" if lora["train_head"] else ""
    extra += f", the rows of {lora['trainable_tokens']} added words" if lora.get("trainable_tokens") else ""
    return (f"LoRA adapters of rank {lora['rank']} (alpha {lora['alpha']:g}) on {lora['layers']} linear layers "
            f"({', '.join(lora['targets'])}){extra}: {share}, merged into the saved model; the adapter is in adapter/")


def saved_step_text(metrics: dict[str, Any]) -> str:
    """Which evaluation the saved model is, and the rule that chose it ("after" is its numbers)."""
    chosen = metrics.get("selection") or {"rule": "last step", "step": metrics["steps"]}
    text = f"step {chosen['step']} of {metrics['steps']} ({chosen['rule']})"
    return text + (f"; {chosen['note']}" if chosen.get("note") else "")


def with_interval_text(value: float, interval: list[float]) -> str:
    return f"{value:.3f} (95% interval {interval[0]:.3f}-{interval[1]:.3f})"


def verdict(metrics: dict[str, Any]) -> str:
    """One sentence: domain (and general-text) perplexity before -> after, and whether the
    domain change is beyond what resampling the held-out documents moves it by (no verdict
    where the interval cannot carry one: too few documents)."""
    low, high = metrics["perplexity_change_interval"]
    text = (f"Domain perplexity {metrics['perplexity_before']:.1f} -> {metrics['perplexity_after']:.1f} "
            f"({_ratio_text(low, high, metrics['interval_resamples'], metrics['change_exceeds_noise'])})")
    if metrics.get("general_data"):
        text += (f"; general text {metrics['general_perplexity_before']:.1f} -> {metrics['general_perplexity_after']:.1f}"
                 " (forgetting shows as a rise")
        if "general_perplexity_change_interval" in metrics:
            low, high = metrics["general_perplexity_change_interval"]
            resamples = metrics.get("general_interval_resamples", metrics["interval_resamples"])
            text += "; " + _ratio_text(low, high, resamples, metrics["general_change_exceeds_noise"])
        text += ")"
    return text + "."


def _ratio_text(low: float, high: float, resamples: str, exceeds: bool | None) -> str:
    from mlm_adapt.evaluation.intervals import interval_caveat

    caveat = interval_caveat(resamples)
    if caveat:
        return f"after/before interval {low:.3f}-{high:.3f}, {caveat}"
    return (f"after/before 95% interval {low:.3f}-{high:.3f}, resampling {resamples}: "
            f"{'beyond' if exceeds else 'within'} resampling noise")
