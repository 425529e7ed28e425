"""What ``mlm-adapt compare`` shows: its table in the terminal and ``report.html`` (one
self-contained page: each recipe's seeds as points and its interval, task gain against
forgetting, and the tables)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from rich.table import Table

from mlm_adapt.outputs.summaries import out

SHORT = {"helps": "helps", "hurts": "hurts", "no measurable difference": "-", "lower": "lower", "higher": "higher",
         "no measurable change": "-"}


def _task(verdict: dict, measure: str = "task") -> str:
    found = verdict.get(measure)
    if found is None:
        return "-"
    low, high = found["interval"]
    return f"{found['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _ratio(verdict: dict, measure: str) -> str:
    found = verdict.get(measure)
    if found is None:
        return "-"
    low, high = found["interval"]
    return f"x{found['ratio']:.2f} [{low:.2f}, {high:.2f}] {SHORT[found['verdict']]}"


def _seeds(verdict: dict) -> str:
    task = verdict.get("task")
    if task is None:
        return "-"
    return " ".join(f"{r['difference']:+.3f}{'*' if r['verdict'] != 'no measurable difference' else ''}"
                    for r in task["single_runs"])


def rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per recipe: task gain and verdict, share of seeds ahead, each seed's single run, perplexity ratios."""
    return [[name, _task(v), SHORT[v["task"]["verdict"]] if "task" in v else "-",
             f"{v['task']['ahead']:.0%}" if "task" in v else "-", _seeds(v),
             _ratio(v, "domain_perplexity"), _ratio(v, "general_perplexity")] for name, v in result["recipes"].items()]


HEADER = ["recipe", "task acc. - base [95%]", "verdict", "ahead", "each seed alone (*: its own test)", "domain ppl / base",
          "general ppl / base"]


def print_comparison(result: dict[str, Any]) -> None:
    out.print(f"recipes against {result['base']}: {len(result['seeds'])} seeds x {result['steps']} steps, "
              f"{result['tested_rows']} task rows tested; intervals over seeds and rows (Multi-Bootstrap)", markup=False)
    table = Table(box=None, pad_edge=False)
    for column in HEADER:
        table.add_column(column)
    for row in rows(result):
        table.add_row(*row)
    out.print(table)
    for pair in result["pairs"]:
        if "task" in pair:
            out.print(f"{pair['second']} - {pair['first']}: task {_task(pair)} {SHORT[pair['task']['verdict']]}", markup=False)
    rec = result["recommendation"]
    out.print(f"recommendation: {rec['recipe'] or 'none'}: {rec['reason']}", markup=False)
    seconds = result["seconds"]
    spent = ", ".join(f"{seconds[k]:.0f} s {k}" for k in seconds if k != "total" and seconds[k] >= 0.5)
    out.print(f"time: {spent}; {seconds['total']:.0f} s in all. Numbers in {result.get('folder', 'compare.json')}",
              markup=False)


def figure_png(result: dict[str, Any]) -> bytes:
    """Task gain (y) against forgetting (x: general-text perplexity change, %; domain without
    general text): each seed a small point, each recipe's mean a large one with its intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    x_measure = "general_perplexity" if result["general_data"] else "domain_perplexity"
    for index, (name, verdict) in enumerate(result["recipes"].items()):
        if "task" not in verdict or x_measure not in verdict:
            continue
        color = f"C{index}"
        seeds_x = [(r["ratio"] - 1) * 100 for r in verdict[x_measure]["per_seed"]]
        seeds_y = [r["difference"] for r in verdict["task"]["per_seed"]]
        ax.scatter(seeds_x, seeds_y, s=14, color=color, alpha=0.5)
        x, (xl, xh) = (verdict[x_measure]["ratio"] - 1) * 100, [(v - 1) * 100 for v in verdict[x_measure]["interval"]]
        y, (yl, yh) = verdict["task"]["difference"], verdict["task"]["interval"]
        ax.errorbar([x], [y], xerr=[[x - xl], [xh - x]], yerr=[[y - yl], [yh - y]], fmt="o", color=color, capsize=3,
                    label=name)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(xlabel=f"{x_measure.replace('_', ' ')} change vs base (%)", ylabel="task accuracy, recipe - base",
           title="each recipe: its seeds (dots), mean and 95% Multi-Bootstrap intervals")
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{cells}</table>"


PAIR_HEADER = ["pair", "task accuracy difference [95%]", "verdict", "domain perplexity ratio", "general-text perplexity ratio"]


def write_report(path: Path, result: dict[str, Any]) -> None:
    """``report.html``: the figure (when there is a task), the recipes, the pairs, the recommendation."""
    has_task = any("task" in v for v in result["recipes"].values())
    image = (f'<img alt="task gain against forgetting" src="data:image/png;base64,'
             f'{base64.b64encode(figure_png(result)).decode()}">') if has_task else ""
    pairs = [[f"{p['second']} - {p['first']}", _task(p), SHORT[p["task"]["verdict"]] if "task" in p else "-",
              _ratio(p, "domain_perplexity"), _ratio(p, "general_perplexity")] for p in result["pairs"]]
    rec = result["recommendation"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlm-adapt compare</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Which recipe pays on the task?</h1>
<p>Base {html.escape(str(result['base']))}; {len(result['seeds'])} training seeds per recipe, {result['steps']} steps
each; split seed {result['split_seed']}; {result['tested_rows']} task rows tested ({result['probe']} probe), the same for
every model. Intervals resample training seeds and rows together (the Multi-Bootstrap): a verdict is about the recipe,
not one run of it.</p>
{image}
<h2>Recipes against the base</h2>{_html_table(HEADER, rows(result))}
<h2>Recipe against recipe</h2>{_html_table(PAIR_HEADER, pairs)}
<h2>Recommendation</h2><p><b>{html.escape(str(rec['recipe'] or 'none'))}</b>: {html.escape(rec['reason'])}</p>
</body></html>"""
    path.write_text(page, encoding="utf-8")
