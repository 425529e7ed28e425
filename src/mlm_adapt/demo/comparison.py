"""``mlm-adapt demo --compare``: the recipes compared across training seeds on the demo's
assets, from the demo's general (news) model. One run of the demo says what adaptation did
to *one* model; this says whether a recipe helps the sentiment task again and again.

Sizes: 200 steps of 8 chunks a run (stage 2 of the demo trains 150-600 on a CPU), 3 seeds
of 5 recipes; what it cost is in docs/levers.md per CPU kind.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from mlm_adapt.config import CompareConfig, DataConfig, MaskingConfig, ModelConfig, TrainConfig
from mlm_adapt.demo.assets import DemoAssets, fetch_assets, labelled_files
from mlm_adapt.demo.stages import ADAPT_LR, BATCH, EVAL_BATCH, MASK_PROB, sized_configs

log = logging.getLogger("mlm_adapt")

RECIPES = ("dapt", "tapt", "curated", "dapt+tapt", "lora")
STEPS, SEEDS, TOP = 200, 3, 1_000
# Held-out chunks of the domain and the news: each run evaluates them before and after
# training, and the comparison once per model; 200 keep that under a fifth of a run's time.
EVAL_CHUNKS = 200


def pool_file(assets: DemoAssets, folder: Path) -> Path:
    """Reviews and news articles as one pool of JSON lines for curated TAPT's ``select``."""
    path = folder / "pool.jsonl"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / ".pool.jsonl.tmp"
    with partial.open("w", encoding="utf-8") as fh, assets.reviews_csv.open(newline="", encoding="utf-8") as reviews:
        for row in csv.DictReader(reviews):
            fh.write(json.dumps({"text": row["text"]}) + "\n")
        for article in sorted(assets.news_dir.rglob("*.txt")):
            fh.write(json.dumps({"text": article.read_text(encoding="latin-1")}) + "\n")
    partial.replace(path)
    return path


def comparison_config(assets: DemoAssets, general: Path, output: Path, seeds: int = SEEDS, steps: int = STEPS,
                      recipes: tuple[str, ...] = RECIPES) -> CompareConfig:
    """The demo's stage 2 options as every run's: from the news model, on the reviews, the news
    held out for forgetting, the sentiment task's held-back rows tested."""
    sentiment, _ = labelled_files(assets)
    run = TrainConfig(
        model=ModelConfig(str(general)),
        data=DataConfig(data=str(assets.reviews_csv), text_column="text", eval_size=EVAL_CHUNKS),
        masking=MaskingConfig(mask_prob=MASK_PROB), output=output, max_steps=steps, batch_size=BATCH,
        eval_batch_size=EVAL_BATCH, lr=ADAPT_LR, warmup_ratio=0.06, general_data=str(assets.news_dir),
        general_encoding="latin-1", task_data=str(sentiment))
    return CompareConfig(run=run, domain=run.data, recipes=recipes, seeds=seeds, top=TOP,
                         pool=DataConfig(str(pool_file(assets, output)), eval_size=EVAL_CHUNKS))


def run_comparison(output: Path, minutes: float, seeds: int = SEEDS, steps: int = STEPS) -> dict[str, Any]:
    """The comparison in ``OUTPUT/compare``, from ``OUTPUT/general`` (the demo's stage 1,
    trained first, sized to ``minutes``, when the folder holds no finished model)."""
    from mlm_adapt.comparison import compare
    from mlm_adapt.training.loop import train

    assets = fetch_assets()
    general = Path(output) / "general"
    if not (general / "metrics.json").is_file():
        log.info("stage 1: fitting a masked-LM head on general news text -> %s", general)
        config, _, _ = sized_configs(assets, Path(output), overwrite=False, minutes=minutes)
        train(config)
    return compare(comparison_config(assets, general, Path(output) / "compare", seeds, steps))
