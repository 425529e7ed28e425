"""What ``mlm-adapt blend`` leaves beside the picked model: the trade-off curve (domain vs
general-text perplexity, one point per blend weight) and a one-page report."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def blend_png(summary: dict[str, Any]) -> bytes:
    """Domain perplexity against general-text perplexity (or against a, without general
    text), each point labelled with its a, the picked one ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary["alphas"]
    general = all("general_perplexity" in e for e in entries)
    xs = [e["general_perplexity"] if general else e["alpha"] for e in entries]
    ys = [e["perplexity"] for e in entries]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(xs, ys, marker="o")
    for x, y, entry in zip(xs, ys, entries):
        ax.annotate(f"a={entry['alpha']:g}", (x, y), textcoords="offset points", xytext=(5, 5))
        if entry["alpha"] == summary["picked"]:
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors="red", zorder=3)
    ax.set_xlabel("general-text perplexity" if general else "blend weight a (0: base, 1: adapted)")
    ax.set_ylabel("held-out domain perplexity")
    ax.set_title("(1 - a) * base + a * adapted")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def blend_html(summary: dict[str, Any], png: bytes) -> str:
    """A self-contained page: the curve, one table row per a, the rule that picked one."""
    columns = [("alpha", "a"), ("perplexity", "domain perplexity"), ("general_perplexity", "general-text perplexity"),
               ("accuracy", "task accuracy")]
    shown = [(key, label) for key, label in columns if any(key in e for e in summary["alphas"])]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in shown)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(e.get(key))}</td>" for key, _ in shown) + "</tr>" for e in summary["alphas"])
    image = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mlm-adapt blend</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.2em .8em;text-align:right}}</style>
</head><body><h1>Blending {html.escape(summary['base'])} and {html.escape(summary['adapted'])}</h1>
<p>Picked a = {summary['picked']:g}: {html.escape(summary['rule'])}. Every blend is measured on the same held-out
documents and masks.</p>
<img alt="domain vs general-text perplexity per blend weight" src="data:image/png;base64,{image}">
<table><tr>{head}</tr>{rows}</table></body></html>
"""


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
