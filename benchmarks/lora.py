"""LoRA against full adaptation: what a step costs, and what the adaptation buys and costs.

``speed``: seconds per optimizer step and peak memory (RSS) of a full step against LoRA at
rank 8 and 64, each in a fresh process (peak RSS is per process), on random tokens of the
demo's shape (batch 8 x 128) for the demo's encoder and for a BERT-base-sized one
(110M weights, random: the step's cost does not depend on the values).

``quality``: the demo's stage 2 (the news model adapted to the reviews, news held out,
the sentiment probe) at equal steps, full against LoRA r = 8 and r = 64, each at the
learning rates given: review and news perplexity, the frozen sentiment probe's paired
difference against the news model.

Usage:
    python benchmarks/lora.py speed [--steps 20] [--lora-dropout 0.05] [--out benchmarks/lora-speed.json]
    python benchmarks/lora.py quality --news mlm-adapt-demo/general [--steps 244] [--out benchmarks/lora-quality.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt import ModelConfig, TrainConfig, train  # noqa: E402
from mlm_adapt.demo.assets import fetch_assets  # noqa: E402
from mlm_adapt.demo.stages import stage_configs  # noqa: E402

VARIANTS = {"full": None, "lora r=8": 8, "lora r=64": 64}


def step_in_this_process(model: str, rank: int | None, steps: int, dropout: float) -> dict:
    """Time ``steps`` optimizer steps (after 2 untimed) of the demo's shape; peak RSS."""
    import numpy as np

    from mlm_adapt.modeling.adapters import Adapter, parameter_counts
    from mlm_adapt.modeling.loading import load_model
    from mlm_adapt.system.runtime import make_accelerator
    from mlm_adapt.training.optimizer_step import optimisation, train_step

    config = TrainConfig(model=ModelConfig(model), batch_size=8, lr=1e-4, lora_rank=rank, lora_dropout=dropout, seed=0)
    accelerator, precision = make_accelerator(config.precision)
    net = load_model(config.model)
    if rank is not None:
        Adapter(net, config.lora_settings(), [])
    objective, optimizer, scheduler = optimisation(config, net, accelerator, steps + 2)
    objective.train()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, net.config.vocab_size, (8, 128))
    labels = np.where(rng.random((8, 128)) < 0.3, ids, -100)
    batch = [(ids, np.ones_like(ids), labels)]
    for _ in range(2):
        train_step(objective, optimizer, scheduler, accelerator, batch).read()
    began = time.perf_counter()
    for _ in range(steps):
        train_step(objective, optimizer, scheduler, accelerator, batch).read()
    seconds = (time.perf_counter() - began) / steps
    return {"seconds_per_step": seconds, "precision": precision, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            **parameter_counts(net)}


def bert_base(folder: Path, tokenizer_from: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    if not (folder / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
        BertForMaskedLM(BertConfig(vocab_size=len(tokenizer))).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def speed(args) -> None:
    assets = fetch_assets()
    models = {"all-MiniLM-L6-v2 (22M)": str(assets.model_dir),
              "BERT-base size (110M)": str(bert_base(Path(tempfile.gettempdir()) / "mlm-adapt-bert-base", assets.model_dir))}
    report = {"cpu": _cpu(), "steps": args.steps, "shape": "8 x 128, 30% masked", "lora_dropout": args.lora_dropout, "results": []}
    for label, model in models.items():
        for name, rank in VARIANTS.items():
            done = subprocess.run([sys.executable, __file__, "one-step", model, str(rank or 0), str(args.steps), str(args.lora_dropout)],
                                  capture_output=True, text=True, check=True)
            result = {"model": label, "variant": name, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(json.dumps(result), flush=True)
            report["results"].append(result)
    for result in report["results"]:
        full = next(r for r in report["results"] if r["model"] == result["model"] and r["variant"] == "full")
        result["step_vs_full"] = result["seconds_per_step"] / full["seconds_per_step"]
        result["memory_vs_full"] = result["peak_rss_gb"] / full["peak_rss_gb"]
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def quality(args) -> None:
    assets = fetch_assets()
    _, adapted = stage_configs(assets, args.work)
    report = {"cpu": _cpu(), "steps": args.steps, "news_model": str(args.news), "runs": []}
    for name, rank in VARIANTS.items():
        for lr in (args.full_lrs if rank is None else args.lora_lrs):
            config = dataclasses.replace(adapted, model=ModelConfig(str(args.news)), output=args.work / f"{name}-{lr}".replace(" ", ""),
                                         max_steps=args.steps, lr=lr, lora_rank=rank, overwrite=True, eval_steps=None,
                                         max_forgetting=None)
            began = time.perf_counter()
            metrics = train(config)
            probe = metrics.get("task_probe") or {}
            run = {"variant": name, "lr": lr, "seconds": time.perf_counter() - began,
                   "step_seconds": metrics["seconds"]["training"] / metrics["steps"],
                   "trainable_parameters": metrics["trainable_parameters"],
                   "reviews": [metrics["perplexity_before"], metrics["perplexity_after"]],
                   "reviews_change_interval": metrics.get("perplexity_change_interval"),
                   "news": [metrics["general_perplexity_before"], metrics["general_perplexity_after"]],
                   "news_change_interval": metrics.get("general_perplexity_change_interval"),
                   "sentiment": probe.get("comparison", {}).get("accuracy")}
            print(json.dumps(run), flush=True)
            report["runs"].append(run)
            args.out.write_text(json.dumps(report, indent=2) + "\n")


def _cpu() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0]
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags)


def main() -> None:
    if sys.argv[1] == "one-step":  # the measured process
        model, rank, steps, dropout = sys.argv[2], int(sys.argv[3]) or None, int(sys.argv[4]), float(sys.argv[5])
        print(json.dumps(step_in_this_process(model, rank, steps, dropout)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "quality"])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--news", type=Path, help="quality: the news model (a demo's general/ folder)")
    parser.add_argument("--full-lrs", type=float, nargs="+", default=[3e-4])
    parser.add_argument("--lora-lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--lora-dropout", type=float, default=0.05, help="speed: the adapters' dropout")
    parser.add_argument("--work", type=Path, default=Path("lora-runs"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.steps = args.steps or (20 if args.what == "speed" else 244)
    args.out = args.out or Path(f"benchmarks/lora-{args.what}.json")
    speed(args) if args.what == "speed" else quality(args)


if __name__ == "__main__":
    main()
