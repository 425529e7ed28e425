"""What the commands print: rich tables and JSON shapes for the terminal.

Kept apart from ``cli`` so that the command definitions stay a thin layer of options
over library calls; everything here takes plain results (dicts, dataclasses) and prints.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)


def print_vocab(result) -> None:
    table = Table(title="domain words split into several tokens, costliest first", title_justify="left")
    for column in ("word", "count", "pieces", "extra tokens") + (("x general rate",) if result.general else ()):
        table.add_column(column, justify="left" if column in ("word", "pieces") else "right")
    for w in result.ranked:
        ratio = (f"{w.ratio:.1f}",) if result.general else ()
        table.add_row(w.text, str(w.count), " ".join(w.pieces), str(w.cost), *ratio)
    out.print(table)
    for name, usage in (("domain", result.domain), ("general", result.general)):
        if usage is not None:
            out.print(f"{name}: {usage.tokens_per_word:.3f} tokens per word, {usage.split_share:.1%} of words split "
                      f"({usage.words} words)")


def print_probe(report: dict[str, Any]) -> None:
    from mlm_adapt.outputs.model_card import leakage_text, probe_rows

    mode = "fine-tuned" if report.get("mode") == "fine-tuned" else "frozen-encoder"
    _probe_table(f"{mode} probe: {report['rows']} rows, {len(report['classes'])} classes, "
                 f"{report.get('folds', '?')} folds x {len(report['seeds'])} repeats", "model", probe_rows(report))
    if report.get("leakage"):
        out.print(leakage_text(report).strip())


def _probe_table(title: str, first_column: str, rows: list[tuple[str, str, str]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in (first_column, "accuracy", "macro-F1"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def print_demo_summary(summary: dict[str, Any]) -> None:
    from mlm_adapt.outputs.model_card import difference_text

    table = Table(title="did adaptation help, and what did it cost?", title_justify="left")
    for column in ("", "general model (news)", "adapted model (reviews)"):
        table.add_column(column)
    table.add_row("held-out review perplexity", *_before_after(summary, "perplexity"))
    if "general_perplexity_before" in summary:
        table.add_row("held-out news perplexity", *_before_after(summary, "general_perplexity"))
    for name, probe in (("review sentiment probe, accuracy", summary.get("sentiment_probe")),
                        ("news topic probe, accuracy", summary.get("topic_probe"))):
        if probe:
            table.add_row(name, *(f"{m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f}" for m in probe["models"]))
            if "comparison" in probe:  # the paired verdict, in the adapted model's column
                comparison = probe["comparison"]
                table.add_row("  adapted - general (one run)", "",
                              difference_text(comparison["accuracy"], comparison.get("no_verdict")))
    out.print(table)
    if (summary.get("sentiment_probe") or {}).get("comparison"):
        out.print(ONE_RUN, markup=False)
    table = Table(title="top-5 fill-mask, general model vs adapted model", title_justify="left")
    table.add_column("text")
    table.add_column("before (news)")
    table.add_column("after (reviews)")
    for probe in summary["probes"]:
        table.add_row(probe["text"], ", ".join(probe["before"]), ", ".join(probe["after"]))
    out.print(table)
    if "selection" in summary:
        chosen = summary["selection"]
        note = f" ({chosen['note']})" if chosen.get("note") else ""
        out.print(f"adapted model saved at step {chosen['step']} of {summary['steps']}: {chosen['rule']}{note}", markup=False)
    if "blend" in summary:
        print_blend(summary["blend"])
    out.print(f"models: {summary['general_model']} and {summary['adapted_model']}; numbers in summary.json")
    if "seconds" in summary:
        out.print(seconds_line(summary["seconds"]), markup=False)


# What one run's task verdict can and cannot say, under the demo's table.
ONE_RUN = ("the sentiment line is one run: its interval is the noise of the tested rows, not of training (another seed "
           "moves it by as much); `mlm-adapt demo --compare` tests the recipes across training seeds")


def seconds_line(seconds: dict[str, float]) -> str:
    """Where a demo's time went, on one line: each part in seconds, training's share of the total."""
    parts = ", ".join(f"{seconds[k]:.0f} s {k}" for k in ("evaluation", "probes", "blend", "other"))
    return (f"time: {seconds['training']:.0f} s training ({seconds['training'] / seconds['total']:.0%}), {parts}; "
            f"{seconds['total']:.0f} s in all")


def _before_after(summary: dict[str, Any], key: str) -> tuple[str, str]:
    return tuple(with_interval(summary[f"{key}_{when}"], summary[f"{key}_{when}_interval"])
                 if f"{key}_{when}_interval" in summary else f"{summary[f'{key}_{when}']:.2f}" for when in ("before", "after"))


def fill_mask_json(texts: list[str], results: dict[str, list]) -> list[dict[str, Any]]:
    return [
        {
            "text": text,
            "masks": [
                {name: [{"token": p.token, "score": p.score} for p in results[name][i][m]] for name in results}
                for m in range(len(next(iter(results.values()))[i]))
            ],
        }
        for i, text in enumerate(texts)
    ]


def print_fill_mask(texts: list[str], results: dict[str, list]) -> None:
    for i, text in enumerate(texts):
        first = next(iter(results.values()))[i]
        for m in range(len(first)):
            title = text if len(first) == 1 else f"{text}  (mask {m + 1})"
            table = Table(title=title, title_justify="left")
            table.add_column("#", justify="right")
            for name in results:
                table.add_column(name)
            for rank in range(len(first[m])):
                cells = [f"{results[n][i][m][rank].token}  {results[n][i][m][rank].score:.3f}" for n in results]
                table.add_row(str(rank + 1), *cells)
            out.print(table)


def print_train_summary(metrics: dict[str, Any], output: Path) -> None:
    from mlm_adapt.outputs.model_card import saved_step_text

    table = Table(title="mlm-adapt train", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("perplexity before", with_interval(metrics["perplexity_before"], metrics["perplexity_before_interval"]))
    table.add_row("perplexity after", with_interval(metrics["perplexity_after"], metrics["perplexity_after_interval"]))
    low, high = metrics["perplexity_change_interval"]
    table.add_row(*_change_row("after / before", low, high, metrics["interval_resamples"], metrics["change_exceeds_noise"]))
    if metrics.get("general_data"):
        for when in ("before", "after"):
            table.add_row(f"general-text perplexity {when}",
                          with_interval(metrics[f"general_perplexity_{when}"], metrics[f"general_perplexity_{when}_interval"]))
        if "general_perplexity_change_interval" in metrics:
            low, high = metrics["general_perplexity_change_interval"]
            table.add_row(*_change_row("general after / before", low, high, metrics["general_interval_resamples"],
                                       metrics["general_change_exceeds_noise"]))
    if metrics.get("replay_chunks"):
        table.add_row("general-text chunks replayed", f"{metrics['replay_chunks']} of {metrics['train_chunks']}")
    table.add_row("bits per byte before / after", f"{metrics['bits_per_byte_before']:.4f} / {metrics['bits_per_byte_after']:.4f}")
    if metrics["added_tokens"]:
        table.add_row("words added to the vocabulary", str(len(metrics["added_tokens"])))
    table.add_row("train / eval chunks", f"{metrics['train_chunks']} / {metrics['eval_chunks']}")
    table.add_row("optimizer steps", str(metrics["steps"]))
    table.add_row("saved model", saved_step_text(metrics))
    table.add_row("samples / s", f"{metrics['train_samples_per_second']:.2f} ({metrics['precision']})")
    out.print(table)
    if metrics.get("task_probe"):
        print_task_probe(metrics["task_probe"])
    elif metrics.get("task_probe_error"):
        out.print(f"no task probe: {metrics['task_probe_error']}", markup=False)
    out.print(f"saved to {output}  (try: mlm-adapt fill-mask --model {output} \"This is a great [MASK].\")")


def print_blend(summary: dict[str, Any]) -> None:
    """One row per blend weight: domain and general-text perplexity (with intervals), task accuracy."""
    table = Table(title=f"(1 - a) * {summary['base']} + a * {summary['adapted']}", title_justify="left")
    entries = summary["alphas"]
    columns = [("perplexity", "domain perplexity"), ("general_perplexity", "general-text perplexity"), ("accuracy", "task accuracy")]
    shown = [(key, label) for key, label in columns if key in entries[0]]
    for label in ["a", *(label for _, label in shown)]:
        table.add_column(label, justify="right")
    for entry in entries:
        cells = [with_interval(entry[k], entry[f"{k}_interval"]) if f"{k}_interval" in entry else f"{entry[k]:.3f}" for k, _ in shown]
        table.add_row(f"{entry['alpha']:g}" + (" (picked)" if entry["alpha"] == summary["picked"] else ""), *cells)
    out.print(table)
    out.print(f"picked a = {summary['picked']:g}: {summary['rule']}", markup=False)


def print_selection(summary: dict[str, Any]) -> None:
    """``mlm-adapt select``: what was picked, from how much, and where it went."""
    excluded = f" ({summary['excluded_duplicates']} copies of task texts left out)" if summary["excluded_duplicates"] else ""
    out.print(f"picked {summary['selected']} of {summary['pool_documents']} pool documents{excluded}, nearest the "
              f"{summary['like_texts']} task texts (cosine {summary['highest_score']:.3f} to {summary['lowest_score']:.3f}), "
              f"in {summary['seconds']:.0f} s: {summary['output']}", markup=False)


def print_assessment(result: dict[str, Any]) -> None:
    """``mlm-adapt assess``: the measurements, then the recommendation."""
    table = Table(title=f"mlm-adapt assess: {result['data']} for {result['model']}", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("base perplexity on held-out documents", with_interval(result["base_perplexity"], result["base_perplexity_interval"]))
    if "general_base_perplexity" in result:
        table.add_row("base perplexity on general text", f"{result['general_base_perplexity']:.3f}")
        table.add_row("ratio (headroom)", f"{result['headroom']:.2f}")
    fertility = result["fertility"]
    general = f" (general text {fertility['general']['tokens_per_word']:.2f})" if fertility.get("general") else ""
    table.add_row("tokens per word", f"{fertility['domain']['tokens_per_word']:.2f}{general}")
    table.add_row("duplicate / near-duplicate documents", f"{result['duplicate_share']:.1%} / {result['near_duplicate_share']:.1%}")
    lengths = result["document_tokens"]
    table.add_row("document tokens (p10 / median / p90)", f"{lengths['p10']:.0f} / {lengths['median']:.0f} / {lengths['p90']:.0f}")
    table.add_row("training chunks", str(result["training_chunks"]))
    table.add_row("step time (this machine)", f"{result['seconds_per_step']:.2f} s ({result['precision']})")
    table.add_row("one epoch", f"{result['steps_per_epoch']} steps, about {result['seconds_per_epoch'] / 60:.1f} min")
    out.print(table)
    out.print(f"recommendation: {result['recommendation']}", markup=False)


def print_word_ledger(ledger: dict[str, Any]) -> None:
    """The words whose summed NLL fell most and rose most (``evaluate --compare --words``)."""
    ranking = ("mean NLL change per occurrence, model - base; words seen "
               f"{ledger['min_occurrences']} times or more" if ledger["ranked_by"] == "mean"
               else "NLL summed over their masked tokens, model - base")
    for key, title in (("fell", "got easier"), ("rose", "got harder")):
        table = Table(title=f"words that {title} ({ranking})", title_justify="left")
        for label in ("word", "occurrences", "base NLL", "model NLL", "change", "mean change [95% interval]"):
            table.add_column(label, justify="left" if label == "word" else "right")
        for row in ledger[key]:
            interval = row["mean_change_interval"]
            mean = f"{row['mean_change']:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "")
            table.add_row(row["word"], str(row["count"]), f"{row['base_nll']:.2f}", f"{row['model_nll']:.2f}",
                          f"{row['change']:+.2f}", mean)
        out.print(table)
    cut = ledger["cut_words"]
    out.print(f"{ledger['words']} words, {ledger['occurrences']} masked occurrences (+ {cut['occurrences']} of words cut by "
              f"chunk edges, in the totals only); total NLL {ledger['base_nll']:.2f} -> {ledger['model_nll']:.2f}", markup=False)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` as JSON lines (written whole, then renamed into place)."""
    import json

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(path)


def interval_label(summary: dict[str, Any]) -> str:
    """"95% interval", or what the interval is where it is not one (``interval_caveat``)."""
    return f"interval ({summary['interval_caveat']})" if summary.get("interval_caveat") else "95% interval"


def _change_row(name: str, low: float, high: float, resamples: str, exceeds: bool | None) -> tuple[str, str]:
    """A ratio's row: its interval and verdict, or why there is none."""
    from mlm_adapt.evaluation.intervals import interval_caveat

    caveat = interval_caveat(resamples)
    if caveat:
        return f"{name} (interval over {resamples})", f"[{low:.3f}, {high:.3f}]: {caveat}"
    return f"{name} (95% interval over {resamples})", f"[{low:.3f}, {high:.3f}]: {'beyond' if exceeds else 'within'} noise"


def with_interval(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def print_task_probe(task: dict[str, Any]) -> None:
    from mlm_adapt.outputs.model_card import leakage_text, task_probe_rows

    _probe_table(f"did it help? frozen-encoder probe on {task['data']} ({task['rows']} rows, out of fold)",
                 "", task_probe_rows(task))
    if task.get("leakage"):
        out.print(leakage_text(task).strip())


class TqdmHandler(logging.Handler):
    """Messages as plain lines on stderr, written through tqdm so progress bars don't overwrite them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        tqdm.write(prefix + record.getMessage(), file=sys.stderr)


def setup_logging() -> None:
    """The package's log messages as plain lines on stderr (a command's progress and warnings)."""
    handler = TqdmHandler()
    logger = logging.getLogger("mlm_adapt")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
