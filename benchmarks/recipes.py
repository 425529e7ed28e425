"""DAPT, TAPT and curated TAPT ("Don't Stop Pretraining", Gururangan et al., 2020) on the
demo's assets, at equal steps, each compared with the news model it starts from.

- DAPT: the Rotten Tomatoes reviews corpus (``--data reviews.csv``);
- TAPT: the sentiment task's own texts (``--tapt --task-data sentiment.jsonl``, no --data);
- curated TAPT: the task's texts plus the ``--top`` documents of reviews + news nearest
  them (``mlm-adapt select``, the news model's embeddings).

No run trains on the task's held-back rows (``--task-test-share`` 0.3 of
``--tapt``, the same rows for each: the split is seeded): they are the probes' test set
and the review-perplexity set for all three. The reviews corpus holds the task's texts,
so DAPT's corpus is the reviews less those rows (``dapt.jsonl``): in these assets DAPT
is close to DAPT+TAPT, a bigger corpus of the same snippets plus plot summaries.

Measured for each: a frozen probe and a fine-tuned probe (``--finetune``) of the news
model vs the adapted one, on the held-back rows with paired intervals; perplexity on the
held-back texts and on the news the news model held out (forgetting).

The fine-tuned probe (3 folds x 2 models x 3 epochs) is the slow part: ~5 minutes a recipe
at 1,000 rows on 2 cores (bf16).

Usage:  python benchmarks/recipes.py --news mlm-adapt-demo/general [--steps 300] [--reuse] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt import DataConfig, EvalConfig, MaskingConfig, ModelConfig, TrainConfig, evaluate, train  # noqa: E402
from mlm_adapt.config import ProbeConfig, SelectConfig  # noqa: E402
from mlm_adapt.data import task_adaptive  # noqa: E402
from mlm_adapt.demo.assets import fetch_assets  # noqa: E402
from mlm_adapt.demo.stages import ADAPT_LR, BATCH, EVAL_BATCH, MASK_PROB  # noqa: E402
from mlm_adapt.evaluation import probing  # noqa: E402
from mlm_adapt.training.curation import select  # noqa: E402

SEED = 42


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0] if Path("/proc/cpuinfo").exists() else ""
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags) or platform.machine()


def held_back_file(sentiment: Path, folder: Path) -> Path:
    """The held-back rows' texts, one a line: the perplexity set no recipe trained on."""
    task = task_adaptive.read(DataConfig(str(sentiment)), 0.3, SEED, alone=True)
    texts = [t.replace("\n", " ") for t, held in zip(task.texts, task.held) if held]
    path = folder / "held-back.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def pool_file(assets, folder: Path) -> Path:
    """Reviews and news articles as one pool of JSON lines (``source`` says which)."""
    path = folder / "pool.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        import csv

        with assets.reviews_csv.open(newline="", encoding="utf-8") as reviews:
            for row in csv.DictReader(reviews):
                fh.write(json.dumps({"text": row["text"], "source": "reviews"}) + "\n")
        for article in sorted(assets.news_dir.rglob("*.txt")):
            fh.write(json.dumps({"text": article.read_text(encoding="latin-1"), "source": "news"}) + "\n")
    return path


def dapt_file(assets, sentiment: Path, folder: Path) -> Path:
    """The reviews corpus less the task's held-back rows' texts (as --tapt would hold them out)."""
    import csv

    held = task_adaptive.read(DataConfig(str(sentiment)), 0.3, SEED, alone=True).held_keys()
    path = folder / "dapt.jsonl"
    with assets.reviews_csv.open(newline="", encoding="utf-8") as reviews, path.open("w", encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(reviews)]
        for text, keep in zip([t for t in texts if t.strip()], task_adaptive.kept(texts, held)):
            if keep:
                fh.write(json.dumps({"text": text}) + "\n")
    return path


def run(name: str, news: Path, data: DataConfig, sentiment: Path, steps: int, out: Path, tapt: bool, reuse: bool) -> dict:
    config = TrainConfig(
        model=ModelConfig(str(news)), data=data, masking=MaskingConfig(mask_prob=MASK_PROB), output=out / name,
        max_steps=steps, batch_size=BATCH, eval_batch_size=EVAL_BATCH, lr=ADAPT_LR, warmup_ratio=0.06, overwrite=True,
        task_data=str(sentiment), tapt=tapt, seed=SEED)
    began = time.perf_counter()
    saved = config.output / "metrics.json"
    if reuse and saved.exists():  # a finished run of the same recipe (--reuse): its model and numbers
        metrics = json.loads(saved.read_text())
    else:
        metrics = train(config)
    return {"seconds": time.perf_counter() - began, "chunks": metrics["train_chunks"], "frozen": metrics.get("task_probe"),
            "own_perplexity": [metrics["perplexity_before"], metrics["perplexity_after"]]}


def perplexity(model: Path, data: DataConfig) -> float:
    return evaluate(EvalConfig(model=ModelConfig(str(model)), data=data, batch_size=EVAL_BATCH, seed=SEED)).perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--news", type=Path, required=True, help="the news model (a demo's general/ folder)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--top", type=int, default=1000, help="documents curated TAPT adds")
    parser.add_argument("--work", type=Path, default=Path("recipes-runs"))
    parser.add_argument("--finetune-rows", type=int, default=1000, help="held-back rows the fine-tuned probe uses")
    parser.add_argument("--reuse", action="store_true", help="reuse a recipe's finished run in --work")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/recipes.json"))
    args = parser.parse_args()
    assets = fetch_assets()
    sentiment = assets.reviews_csv.with_name("sentiment.jsonl")
    args.work.mkdir(parents=True, exist_ok=True)
    held_back = held_back_file(sentiment, args.work)
    picked = args.work / "curated.jsonl"
    began = time.perf_counter()
    selection = select(SelectConfig(pool=DataConfig(str(pool_file(assets, args.work))), like=DataConfig(str(sentiment)),
                                    output=picked, top=args.top, model=ModelConfig(str(args.news)), overwrite=True))
    news = _news_picked(args.work / "pool.jsonl", picked)
    report = {"cpu": cpu_flags(), "steps": args.steps, "batch": BATCH, "lr": ADAPT_LR, "news_model": str(args.news),
              "select": {**selection, "picked_news": news, "seconds": time.perf_counter() - began}, "recipes": {}}
    recipes = {  # name: (corpus, --tapt)
        "DAPT": (DataConfig(str(dapt_file(assets, sentiment, args.work)), eval_size=300), False),
        "TAPT": (DataConfig(str(sentiment), eval_size=300), True),
        "curated TAPT": (DataConfig(str(picked), eval_size=300), True),
    }
    review_set = DataConfig(str(held_back), eval_size=300)
    news_set = DataConfig(str(assets.news_dir), encoding="latin-1", eval_size=300)
    report["news_model_perplexity"] = {"held_back_reviews": perplexity(args.news, review_set), "news": perplexity(args.news, news_set)}
    for name, (data, tapt) in recipes.items():
        print(f"== {name}", flush=True)
        entry = run(name.replace(" ", "-"), args.news, data, sentiment, args.steps, args.work, tapt, args.reuse)
        folder = args.work / name.replace(" ", "-")
        entry["held_back_review_perplexity"] = perplexity(folder, review_set)
        entry["news_perplexity"] = perplexity(folder, news_set)
        began = time.perf_counter()
        entry["finetuned"] = probing.probe(ProbeConfig(models=(ModelConfig(str(args.news)), ModelConfig(str(folder))),
                                                       data=DataConfig(str(sentiment)), finetune=True, seed=SEED,
                                                       max_rows=args.finetune_rows))
        entry["finetune_seconds"] = time.perf_counter() - began
        report["recipes"][name] = entry
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: _brief(v) for k, v in report["recipes"].items()}, indent=2))


def _news_picked(pool: Path, picked: Path) -> int:
    """How many of the picked documents are news articles."""
    news = {json.loads(line)["text"] for line in pool.read_text(encoding="utf-8").splitlines()
            if json.loads(line)["source"] == "news"}
    return sum(json.loads(line)["text"] in news for line in picked.read_text(encoding="utf-8").splitlines())


def _brief(entry: dict) -> dict:
    def diff(probe):
        if not probe:
            return None
        accuracy = probe["comparison"]["accuracy"]
        return [round(accuracy["difference"], 4), [round(x, 4) for x in accuracy["interval"]], probe["leakage"]["tested_rows"]]
    return {"frozen": diff(entry["frozen"]), "finetuned": diff(entry["finetuned"]),
            "reviews": round(entry["held_back_review_perplexity"], 1), "news": round(entry["news_perplexity"], 1)}


if __name__ == "__main__":
    main()
