"""What a person reads after a run: a Hub model card (``model_card``), training curves, an HTML report.

All three are written into the run's staging folder, so they land atomically with
the model: ``README.md`` (the Hub's model-card format, via ``huggingface_hub``),
``training_curves.png`` and ``report.html`` (one self-contained page, images
embedded).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlm_adapt.config import WORD_MIN_OCCURRENCES
from mlm_adapt.data.chunking import NO_WORD, Chunks
from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.outputs.model_card import (
    model_card,
    saved_step_text,
    task_probe_intro,
    task_probe_rows,
    verdict,
    weights_trained_text,
    with_interval_text,
)
from mlm_adapt.system.disclosure import local_paths, public_options, redact

PROBE_WINDOW = 12  # tokens of context on each side of a default probe's mask


def default_probes(chunks: Chunks, tokenizer, count: int = 3, seed: int = 0) -> list[str]:
    """Sentences from held-out text with one whole, alphabetic word replaced by ``[MASK]``."""
    rng = generator(seed, Salt.PROBES)
    probes: list[str] = []
    for row in rng.permutation(len(chunks)):
        ids, words = chunks.input_ids[row], chunks.word_ids[row]
        positions = [i for i in range(PROBE_WINDOW, len(ids) - PROBE_WINDOW) if _whole_word(ids, words, i, tokenizer)]
        if positions:
            pos = int(rng.choice(positions))
            start, end = pos - PROBE_WINDOW, pos + 1 + PROBE_WINDOW
            while start < pos and words[start] != NO_WORD and words[start] == words[start - 1]:
                start += 1  # begin on a whole word, not a "##piece"
            while pos + 1 < end < len(words) and words[end] != NO_WORD and words[end] == words[end - 1]:
                end -= 1
            left = tokenizer.decode(ids[start:pos], skip_special_tokens=True).strip()
            right = tokenizer.decode(ids[pos + 1:end], skip_special_tokens=True).strip()
            probes.append(f"{left} [MASK] {right}")
        if len(probes) == count:
            break
    return probes


def _whole_word(ids: np.ndarray, words: np.ndarray, i: int, tokenizer) -> bool:
    if words[i] == NO_WORD or words[i - 1] == words[i] or words[i + 1] == words[i]:
        return False
    token = tokenizer.convert_ids_to_tokens(int(ids[i])).lstrip("Ġ▁")
    return token.isalpha() and len(token) >= 4


def curves_png(metrics: dict[str, Any]) -> bytes:
    """Training loss per logged step, and eval perplexity per epoch (before training = epoch 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, ppl_ax) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    steps = [e["step"] for e in metrics["log_history"]]
    loss_ax.plot(steps, [e["loss"] for e in metrics["log_history"]], color="#1f77b4")
    loss_ax.set(title="training loss (masked tokens)", xlabel="optimizer step", ylabel="cross-entropy")
    epochs = [0.0] + [float(h["epoch"]) for h in metrics["history"]]
    perplexities = [metrics["perplexity_before"]] + [h["perplexity"] for h in metrics["history"]]
    ppl_ax.plot(epochs, perplexities, marker="o", color="#d62728", label="domain (held out)")
    if metrics.get("general_data"):  # forgetting: the general text's perplexity on the same axes
        general = [metrics["general_perplexity_before"]] + [h["general_perplexity"] for h in metrics["history"]]
        ppl_ax.plot(epochs, general, marker="s", color="#7f7f7f", label="general text (held out)")
        ppl_ax.legend()
    ppl_ax.set(title="held-out perplexity (same masks)", xlabel="epoch (0 = before training)", ylabel="perplexity")
    for ax in (loss_ax, ppl_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def report_html(config_options: dict[str, Any], metrics: dict[str, Any], probes: list[dict[str, Any]], png: bytes) -> str:
    """One self-contained page: metrics, curves (embedded PNG), configuration, fill-mask table."""
    esc = html.escape
    rows = [("perplexity before", with_interval_text(metrics["perplexity_before"], metrics["perplexity_before_interval"])),
            ("perplexity after", with_interval_text(metrics["perplexity_after"], metrics["perplexity_after_interval"])),
            ("eval loss before / after", f"{metrics['eval_loss_before']:.4f} / {metrics['eval_loss_after']:.4f}"),
            ("masked evaluation tokens", str(metrics["eval_masked_tokens"])),
            ("bits per byte before / after", f"{metrics['bits_per_byte_before']:.4f} / {metrics['bits_per_byte_after']:.4f}"),
            ("training / evaluation chunks", f"{metrics['train_chunks']} / {metrics['eval_chunks']}"),
            ("optimizer steps", str(metrics["steps"])), ("weights trained", weights_trained_text(metrics)),
            ("saved model", saved_step_text(metrics)), ("precision", metrics["precision"]),
            ("samples / s", f"{metrics['train_samples_per_second']:.2f}")]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    general = bool(metrics.get("general_data"))
    history = "<tr><th>epoch</th><th>step</th><th>train loss</th><th>eval loss</th><th>perplexity</th>" + (
        "<th>general-text perplexity</th>" if general else "") + "</tr>" + "".join(
        f"<tr><td>{h['epoch']}</td><td>{h['step']}</td><td>{_number(h['train_loss'])}</td>"
        f"<td>{h['eval_loss']:.4f}</td><td>{h['perplexity']:.3f}</td>"
        + (f"<td>{h['general_perplexity']:.3f}</td>" if general else "") + "</tr>" for h in metrics["history"])
    probe_rows = "".join(
        f"<tr><td>{esc(p['text'])}</td><td>{esc(', '.join(p['before']))}</td><td>{esc(', '.join(p['after']))}</td></tr>"
        for p in probes)
    image = base64.b64encode(png).decode()
    return _PAGE.format(
        title=esc(f"mlm-adapt: {config_options['model']} on {config_options['data']}"), table=table, history=history,
        image=image, probes=probe_rows, config=esc(yaml.safe_dump(config_options, sort_keys=False)),
        vocabulary=_added_tokens_html(metrics.get("added_tokens") or []), verdict=esc(verdict(metrics)),
        task=_task_probe_html(metrics.get("task_probe"), metrics.get("task_probe_error")), words=_words_html(metrics.get("words")),
    )


def _task_probe_html(task: dict[str, Any] | None, error: str | None = None) -> str:
    if error:
        return f"<p>The labelled task was not probed: {html.escape(error)}</p>"
    if not task:
        return "<p>No labelled task was probed (train with --task-data, or run <code>mlm-adapt probe</code>).</p>"
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in task_probe_rows(task))
    intro = html.escape(task_probe_intro(task)).replace("`", "")
    return f"<p>{intro}</p><table><tr><th></th><th>accuracy</th><th>macro-F1</th></tr>{rows}</table>"


def _words_html(words: dict[str, Any] | None) -> str:
    """The word ledger: the whole words whose held-out NLL fell most and rose most."""
    if not words:
        return ""
    parts = []
    per_occurrence = f"per occurrence (seen {WORD_MIN_OCCURRENCES} times or more)"
    lists = (("fell", "got easier"), ("rose", "got harder"),
             ("mean_fell", f"got easier {per_occurrence}"), ("mean_rose", f"got harder {per_occurrence}"))
    for key, title in lists:
        if not words.get(key):
            continue
        rows = "".join(
            f"<tr><td>{html.escape(r['word'])}</td><td>{r['count']}</td><td>{r['change']:+.2f}</td><td>{r['mean_change']:+.3f}"
            + (f" [{r['mean_change_interval'][0]:+.3f}, {r['mean_change_interval'][1]:+.3f}]" if r["mean_change_interval"] else "")
            + "</td></tr>" for r in words[key])
        parts.append(f"<h3>Words that {title}</h3><table><tr><th>word</th><th>occurrences</th><th>NLL change (nats)</th>"
                     f"<th>per occurrence [95% interval]</th></tr>{rows}</table>")
    return ("<h2>What changed, word by word</h2><p>Masked-token NLL of the saved model minus the base model's on the "
            f"held-out text, summed per whole word ({words['occurrences']} occurrences of {words['words']} words, and "
            f"{words['cut_words']['occurrences']} of words cut by chunk edges, counted in the totals only; total "
            f"{words['base_nll']:.1f} -> {words['model_nll']:.1f} nats).</p>" + "".join(parts))


def _added_tokens_html(added: list[dict[str, Any]]) -> str:
    if not added:
        return ""
    rows = "".join(f"<tr><td>{html.escape(a['token'])}</td><td>{html.escape(' '.join(a['pieces']))}</td></tr>" for a in added)
    return ("<h2>Added vocabulary</h2><p>Words added as whole tokens (each initialised as the mean of its old "
            f"pieces); compare runs by bits per byte, not per-token perplexity.</p><table><tr><th>token</th>"
            f"<th>pieces before</th></tr>{rows}</table>")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 62rem; padding: 0 1.5rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} img {{ max-width: 100%; }} pre {{ background: #f7f7f7; padding: 0.8rem; }}
</style></head><body>
<h1>{title}</h1>
<h2>Did it help?</h2><p>{verdict}</p>
{task}
<img alt="training loss and held-out perplexity (domain and general text)" src="data:image/png;base64,{image}">
<h2>Metrics</h2><table>{table}</table>
<h2>Per epoch</h2><table>{history}</table>
<h2>Fill-mask, base model vs adapted model</h2>
<table><tr><th>text</th><th>before</th><th>after</th></tr>{probes}</table>
{words}
{vocabulary}
<h2>Configuration</h2><pre>{config}</pre>
</body></html>
"""


def probe_predictions(config, trained_model, tokenizer, eval_chunks: Chunks, top_k: int = 5) -> list[dict[str, Any]]:
    """Top-k fill-mask of the base model and the adapted one on the probe texts."""
    from mlm_adapt.evaluation.inference import FillMask

    texts = list(config.probes) or default_probes(eval_chunks, tokenizer, seed=config.data_seed())
    # The base model with its own tokenizer: with --add-tokens the run's tokenizer has ids it lacks.
    before = FillMask(config.model, top_k)
    after = FillMask(config.model, top_k, loaded=(trained_model, tokenizer))
    return [{"text": t, "before": [p.token for p in before(t)[0]], "after": [p.token for p in after(t)[0]]} for t in texts]


def write_run_report(folder: Path, config, metrics: dict[str, Any], trained_model, tokenizer, eval_chunks: Chunks) -> None:
    """Model card, curves and HTML report of a finished run, into ``folder``. Both are for
    sharing (a user may upload the folder by hand): no local path appears in either."""
    from mlm_adapt.flat_options import to_options

    probes = probe_predictions(config, trained_model, tokenizer, eval_chunks)
    png = curves_png(metrics)
    options = to_options(config)
    local = local_paths(options, metrics)
    (folder / "training_curves.png").write_bytes(png)
    (folder / "README.md").write_text(redact(model_card(config, metrics, probes), local), encoding="utf-8")
    page = report_html(public_options(options), metrics, probes, png)
    (folder / "report.html").write_text(redact(page, local), encoding="utf-8")
