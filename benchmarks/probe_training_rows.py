"""How many rows the probe's classifier should train on: accuracy, the paired interval's
width and the seconds it costs, as the rows that only train grow (the rows a compared
model adapted on, which the probe's protocol never tests).

On the demo's models (a run's ``general`` and ``adapted`` folders) and its sentiment task:
the rows stage 2 never trained on are tested, always all of them; a seeded sample of the
seen rows joins every training fold, from none to all. Each model embeds every row once;
each setting then scores the same vectors, so the settings differ only in their training rows.

Usage:  python benchmarks/probe_training_rows.py --run mlm-adapt-demo [--sizes 0,1000,3000,all] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig  # noqa: E402
from mlm_adapt.data.duplicates import duplicate_groups  # noqa: E402
from mlm_adapt.evaluation import embeddings, labelled, leakage, probing, provenance  # noqa: E402
from mlm_adapt.modeling.loading import load_model, load_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a demo's output folder (general/ and adapted/ in it)")
    parser.add_argument("--task", type=Path, default=None, help="the labelled data (default: the adapted run's --task-data)")
    parser.add_argument("--sizes", default="0,1000,3000,all", help="seen rows added to every training fold")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/probe-training-rows.json"))
    args = parser.parse_args()
    models = (ModelConfig(str(args.run / "general")), ModelConfig(str(args.run / "adapted")))
    task = args.task or Path(json.loads((args.run / "adapted" / "metrics.json").read_text())["task_probe"]["data"])
    config = ProbeConfig(models=models, data=DataConfig(str(task)))
    texts, labels, names = labelled.labelled_texts(config)
    found = [c for m in models for c in provenance.corpora(m.model)]
    testable, leak = leakage.partition(texts, labels, names, leakage.found_in(found, texts), None, 5)
    report = {"task": str(task), "rows": len(texts), "leakage": leak, "settings": []}
    features, seconds = {}, {}
    for model in models:
        began = time.perf_counter()
        features[model.model] = embeddings.embed(load_model(model), load_tokenizer(model), texts, config.max_length)
        seconds[model.model] = time.perf_counter() - began
        print(f"embedded {len(texts)} texts with {model.model} in {seconds[model.model]:.1f} s", flush=True)
    report["embed_seconds_per_1000"] = float(np.mean(list(seconds.values())) / len(texts) * 1000)
    tested, seen = np.flatnonzero(testable), np.flatnonzero(~testable)
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        extra = seen if size == "all" else np.sort(rng.choice(seen, min(int(size), len(seen)), replace=False))
        rows = np.concatenate([tested, extra])
        groups, chosen = duplicate_groups([texts[i] for i in rows]), labels[rows]
        began = time.perf_counter()
        scores = [probing.score(features[m.model][rows], chosen, [42, 43], 5, m.model, groups, names, tested=len(tested))
                  for m in models]
        baseline = probing.majority_baseline(chosen, groups, [42, 43], 5, names, tested=len(tested))
        comparison = probing.compare(*scores, groups[: len(tested)], baseline=baseline, seed=42)["accuracy"]
        setting = {"training_only": len(extra), "tested": len(tested), "accuracy": [float(np.mean(s.accuracy)) for s in scores],
                   "difference": comparison["difference"], "interval": comparison["interval"],
                   "width": comparison["interval"][1] - comparison["interval"][0],
                   "fit_seconds": time.perf_counter() - began,
                   "embed_seconds": 2 * report["embed_seconds_per_1000"] * len(rows) / 1000}
        report["settings"].append(setting)
        print(json.dumps(setting), flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
