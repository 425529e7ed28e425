"""mlm-adapt's training step against the course recipe on a GPU, side by side in one run.

Shapes: the distilbert-base and bert-base architectures (random weights, the
30,522-token uncased vocabulary) at batch 64 x 128 and 32 x 512 tokens. The tokens are
random too: speed does not depend on them, so nothing is downloaded and the demo's
files are not needed, nor an install of the package: on a machine with torch,
transformers, accelerate and `datasets` (the step's modules import it through
data.corpus; the device tool's image lacks it, so carry its wheel with dill and
multiprocess), from the repository's root. On an H200 (2026-12-04) each variant's
process takes ~20 s and a compiled one ~60-80 s, so in calls of at most 10 minutes:

    PYTHONPATH=src PYTHONUNBUFFERED=1 python benchmarks/gpu_throughput.py --only recipe,mlm-adapt --steps 200 --out $OUT/gpu-a.json
    PYTHONPATH=src PYTHONUNBUFFERED=1 python benchmarks/gpu_throughput.py --only mlm-adapt-compile --repeats 1 --out $OUT/gpu-b.json

(30 steps, the default, last 0.3-2 s on an H200: runs differed by up to 17%).

Variants, each shape and variant in its own process (clean peak-memory numbers):
  recipe             Trainer + DataCollatorForLanguageModeling, bf16=True (fp16 before Ampere): the course's recipe
  mlm-adapt          optimizer_step.optimisation + train_step on the model as `mlm-adapt train`
                     loads it (SDPA, MLM head and the last layer's feed-forward on the masked rows,
                     fused AdamW, autocast in --precision auto's choice, no host sync)
  mlm-adapt-compile  the same with --compile (whose encoder keeps its full last layer)
Reported: samples/s, tokens/s, MFU (model FLOPs each variant needs, as in
train_throughput.py, over the measured matmul peak in that precision) and peak GPU memory. Steps are
timed from the end of the warm-up steps to the end of the last, synchronised only there.

Before measuring, on the first GPU lent (what a CPU cannot check: docs/performance.md):

    PYTHONPATH=src PYTHONUNBUFFERED=1 python benchmarks/gpu_throughput.py --sync-check --out $OUT/sync.json

runs a few training steps and an evaluation pass of a small BERT under
``torch.cuda.set_sync_debug_mode("error")`` in bf16 and fp16, with and without --packing
(FlashAttention's varlen path where flash-attn is installed), plus the probe's embedding
on the GPU, and reports each case as ok or with the error: any host sync is one.

Usage:  python benchmarks/gpu_throughput.py [--steps 30] [--repeats 2] [--only mlm-adapt,recipe]
                                            [--shapes bert-512,...] [--out benchmarks/results-gpu.json]
        python benchmarks/gpu_throughput.py --smoke   # tiny models on this CPU: the script runs end to end
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WARMUP = 3
VOCAB = 30522
# name: (architecture, batch, tokens per chunk)
SHAPES = {"distilbert-128": ("distilbert", 64, 128), "distilbert-512": ("distilbert", 32, 512),
          "bert-128": ("bert", 64, 128), "bert-512": ("bert", 32, 512)}
SMOKE_SHAPES = {"tiny-bert-32": ("bert", 4, 32)}
VARIANTS = ("recipe", "mlm-adapt", "mlm-adapt-compile")


def model_config(arch: str, smoke: bool):
    from transformers import BertConfig, DistilBertConfig

    tiny = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    if arch == "bert":
        return BertConfig(vocab_size=VOCAB, **(tiny if smoke else {}))
    return DistilBertConfig(vocab_size=VOCAB, **(dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128) if smoke else {}))


def dimensions(config) -> tuple[int, int, int]:
    """(hidden size, layers, feed-forward size) of a BERT or DistilBERT config."""
    if config.model_type == "distilbert":
        return config.dim, config.n_layers, config.hidden_dim
    return config.hidden_size, config.num_hidden_layers, config.intermediate_size


def flops_per_sample(config, tokens: int, predicted_share: float, queries_on_rows: bool = False,
                     trims_last_layer: bool = True) -> float:
    """Training FLOPs (3x forward) of one chunk; the vocabulary projection on
    ``predicted_share`` of it, and with ``trims_last_layer`` (last_layer; not a compiled
    encoder) the last layer's output projection and feed-forward block too; with
    ``queries_on_rows`` (last_layer.queries_on_rows: CPUs) its query projection and
    attention products as well."""
    d, layers, ff = dimensions(config)
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ff) + 4 * tokens * tokens * d
    trimmed = 2 * (2 * d * ff + d * d) + (2 * d * d + 4 * tokens * d if queries_on_rows else 0)
    trimmed *= trims_last_layer
    head = 2 * tokens * predicted_share * (d * d + d * VOCAB)
    return 3 * (layers * per_layer - tokens * (1 - predicted_share) * trimmed + head)


def tokenizer():
    """A WordPiece tokenizer over a made-up 30,522-word vocabulary (the collator needs one)."""
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    assert len(tok) == VOCAB  # (transformers 5 ignores vocab_file= here: a 5-token vocabulary)
    return tok


def random_chunks(rows: int, length: int, tok, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, length))
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    return ids


def precision(smoke: bool) -> str:
    """What `--precision auto` picks here: bf16 on Ampere and newer, fp16 on older GPUs."""
    from mlm_adapt.system.runtime import detect_precision

    return "fp32" if smoke else detect_precision("auto")


def device_and_sync(smoke: bool):
    import torch

    if smoke:
        return "cpu", lambda: None
    assert torch.cuda.is_available(), "no GPU: run with --smoke to check the script on a CPU"
    return "cuda", torch.cuda.synchronize


def run_recipe(arch: str, batch: int, length: int, steps: int, smoke: bool) -> dict:
    import torch
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    device, sync = device_and_sync(smoke)
    tok = tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        chunks = [{"input_ids": row.tolist()} for row in random_chunks(steps * batch, length, tok)]
        torch.manual_seed(0)
        model = AutoModelForMaskedLM.from_config(model_config(arch, smoke))
        marks: list[float] = []

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step in (WARMUP, steps):
                    sync()
                    marks.append(time.perf_counter())

        args = TrainingArguments(output_dir=str(Path(folder) / "out"), per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=2e-5, weight_decay=0.01, bf16=precision(smoke) == "bf16",
                                 fp16=precision(smoke) == "fp16", report_to="none",
                                 logging_strategy="no", save_strategy="no", use_cpu=device == "cpu")
        Trainer(model=model, args=args, train_dataset=chunks, callbacks=[Clock()],
                data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15)).train()
    return {"seconds": marks[1] - marks[0], "predicted_share": 1.0}


def run_ours(arch: str, batch: int, length: int, steps: int, smoke: bool, compile_encoder: bool) -> dict:
    import numpy as np
    import torch

    from mlm_adapt.config import ModelConfig, TrainConfig
    from mlm_adapt.data.batching import in_memory_batches
    from mlm_adapt.data.chunking import NO_WORD, Chunks
    from mlm_adapt.data.masking import MaskingVocab
    from mlm_adapt.modeling.loading import load_model
    from mlm_adapt.system.runtime import make_accelerator
    from mlm_adapt.training.optimizer_step import optimisation, train_step

    _, sync = device_and_sync(smoke)
    tok = tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        from transformers import AutoModelForMaskedLM

        AutoModelForMaskedLM.from_config(model_config(arch, smoke)).save_pretrained(folder)
        net = load_model(ModelConfig(folder))  # as `mlm-adapt train` loads it
    ids = random_chunks(steps * batch, length, tok)
    words = np.tile(np.arange(length), (len(ids), 1))
    words[:, [0, -1]] = NO_WORD
    chunks = Chunks(ids, np.ones_like(ids), words)
    config = TrainConfig(batch_size=batch, precision=precision(smoke), lr=2e-5, compile=compile_encoder)
    accelerator, _ = make_accelerator(config.precision)
    objective, optimizer, scheduler = optimisation(config, net, accelerator, steps)
    objective.train()
    batches = in_memory_batches(chunks, config, MaskingVocab.from_tokenizer(tok), accelerator, 0)
    for _ in range(WARMUP):
        outcome = train_step(objective, optimizer, scheduler, accelerator, next(batches))
    outcome.read()
    sync()
    began = time.perf_counter()
    for _ in range(steps - WARMUP):
        outcome = train_step(objective, optimizer, scheduler, accelerator, next(batches))
    outcome.read()
    sync()
    return {"seconds": time.perf_counter() - began, "predicted_share": config.masking.train_mask_prob()}


def sync_case(precision_name: str, packing: bool, smoke: bool) -> None:
    """Three training steps and one evaluation pass with host syncs made errors (after two
    warm-up steps, whose one-off allocations and kernel choices may synchronise)."""
    import numpy as np
    import torch

    from mlm_adapt.config import DataConfig, ModelConfig, TrainConfig
    from mlm_adapt.data.batching import in_memory_batches
    from mlm_adapt.data.chunking import NO_WORD, Chunks
    from mlm_adapt.data.held_out import MaskedSet
    from mlm_adapt.data.masking import MaskingVocab
    from mlm_adapt.evaluation.perplexity import score_shard
    from mlm_adapt.modeling.loading import load_model
    from mlm_adapt.system.runtime import make_accelerator
    from mlm_adapt.training.optimizer_step import optimisation, train_step

    tok = tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        from transformers import AutoModelForMaskedLM

        AutoModelForMaskedLM.from_config(model_config("bert", smoke=True)).save_pretrained(folder)
        net = load_model(ModelConfig(folder), packing=packing)
    ids = random_chunks(64, 64, tok)
    if packing:
        ids[:, [20, 41]] = tok.sep_token_id
    attention = np.ones_like(ids)
    attention[::3, 50:] = 0  # padding too
    words = np.tile(np.arange(ids.shape[1]), (len(ids), 1))
    words[:, [0, -1]] = NO_WORD
    config = TrainConfig(batch_size=8, precision=precision_name, data=DataConfig(chunk_size=64, packing=packing))
    accelerator, _ = make_accelerator(config.precision)
    objective, optimizer, scheduler = optimisation(config, net, accelerator, 8, tok.sep_token_id if packing else None)
    objective.train()
    batches = in_memory_batches(Chunks(ids, attention, words), config, MaskingVocab.from_tokenizer(tok), accelerator, 0)
    for _ in range(2):
        train_step(objective, optimizer, scheduler, accelerator, next(batches)).read()
    labels = np.where(np.random.default_rng(0).random(ids.shape) < 0.15, ids, -100)
    strict = contextlib.nullcontext() if smoke else _sync_debug("error")
    with strict:
        for _ in range(3):
            outcome = train_step(objective, optimizer, scheduler, accelerator, next(batches))
        objective.eval()
        with torch.inference_mode():
            token_nll = score_shard(objective, MaskedSet(ids, attention, labels), 16, accelerator)
    assert np.isfinite(outcome.read()[0]) and torch.isfinite(token_nll.nansum())


@contextlib.contextmanager
def _sync_debug(mode: str):
    import torch

    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def embed_case(smoke: bool) -> None:
    """The task probe's embedding of a model that sits on the GPU (it fed CPU tensors to it)."""
    import torch
    from transformers import AutoModelForMaskedLM

    from mlm_adapt.evaluation.embeddings import embed

    model = AutoModelForMaskedLM.from_config(model_config("bert", smoke=True)).to(device_and_sync(smoke)[0])
    vectors = embed(model, tokenizer(), ["w1 w2 w3", "w4 w5"], max_length=16)
    assert vectors.shape == (2, model.config.hidden_size) and torch.isfinite(torch.from_numpy(vectors)).all()


def sync_check(smoke: bool) -> dict:
    """Each GPU-only path as "ok" or the error it raised (see the module docstring)."""
    import traceback

    precisions = ["fp32"] if smoke else ["bf16", "fp16"]
    cases = {f"step+eval {p}{' packing' if packing else ''}": (sync_case, (p, packing, smoke))
             for p in precisions for packing in (False, True)}
    cases["probe embedding on the device"] = (embed_case, (smoke,))
    results = {}
    for name, (case, arguments) in cases.items():
        try:
            case(*arguments)
            results[name] = "ok"
        except Exception as exc:  # reported, not raised: every case gets its line
            where = traceback.format_exc(limit=-3).replace("\n", " ")[-600:]
            results[name] = f"{type(exc).__name__}: {exc}".splitlines()[0] + " | " + where
        print(name, results[name], flush=True)
    return results


def run_variant(variant: str, shape: str, steps: int, smoke: bool) -> dict:
    import torch

    arch, batch, length = {**SHAPES, **SMOKE_SHAPES}[shape]
    if variant == "recipe":
        result = run_recipe(arch, batch, length, steps, smoke)
    else:
        result = run_ours(arch, batch, length, steps, smoke, compile_encoder=variant == "mlm-adapt-compile")
    samples = (steps - WARMUP) * batch
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
    from mlm_adapt.speed.last_layer import queries_on_rows

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flops = flops_per_sample(model_config(arch, smoke), length, result["predicted_share"], queries_on_rows(device),
                             trims_last_layer=variant == "mlm-adapt")  # a compiled encoder keeps its full last layer
    return {"samples_per_second": samples / result["seconds"], "tokens_per_second": samples * length / result["seconds"],
            "achieved_tflops": flops * samples / result["seconds"] / 1e12, "peak_gpu_mb": peak}


def matmul_peak(smoke: bool) -> float:
    """TFLOP/s of 8192^2 matrix products in the run's precision on the GPU (bf16, or fp16 on
    pre-Ampere cards; fp32 512^2 on the CPU with --smoke)."""
    import torch

    device, sync = device_and_sync(smoke)
    size, dtype = (512, torch.float32) if smoke else (8192, getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[precision(smoke)]))
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    began, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - began) / 1e12


def device_name(smoke: bool) -> str:
    import torch

    return "cpu (--smoke)" if smoke else torch.cuda.get_device_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help=f"per run, the first {WARMUP} untimed")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each variant (median reported)")
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--shapes", help=f"comma-separated shapes (default: all of {', '.join(SHAPES)})")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script, measures nothing")
    parser.add_argument("--sync-check", action="store_true", help="check the GPU-only paths for host syncs, measure nothing")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-gpu.json"))
    args = parser.parse_args()
    if args.sync_check:
        results = {"device": device_name(args.smoke), "cases": sync_check(args.smoke)}
        args.out.write_text(json.dumps(results, indent=1))
        sys.exit(0 if all(v == "ok" for v in results["cases"].values()) else 1)
    if args.variant:  # child process: one variant on one shape, JSON on stdout
        print(json.dumps(run_variant(args.variant, args.shape, args.steps, args.smoke)))
        return
    shapes = list(SMOKE_SHAPES) if args.smoke else (args.shapes.split(",") if args.shapes else list(SHAPES))
    variants = args.only.split(",") if args.only else list(VARIANTS)
    unknown = (set(shapes) - set(SHAPES) - set(SMOKE_SHAPES)) | (set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown shape(s) or variant(s): {', '.join(sorted(unknown))}")
    report = {"device": device_name(args.smoke), "precision": precision(args.smoke), "steps": args.steps,
              "peak_tflops": matmul_peak(args.smoke), "results": {}}
    runs: dict[tuple[str, str], list[dict]] = {(s, v): [] for s in shapes for v in variants}
    for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every variant
        for key in runs:
            command = [sys.executable, __file__, "--variant", key[1], "--shape", key[0], "--steps", str(args.steps)]
            proc = subprocess.run(command + ["--smoke"] * args.smoke, capture_output=True, text=True)
            runs[key].append(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0
                             else {"error": child_error(proc.returncode, proc.stderr)})
            print(*key, runs[key][-1], flush=True)
    for (shape, variant), results in runs.items():
        report["results"].setdefault(shape, {})[variant] = _summary(results, report["peak_tflops"])
    args.out.write_text(json.dumps(report, indent=1))
    print(_markdown(report))


def child_error(code: int, stderr: str) -> str:
    """A failed child's last line of stderr, or what its exit status says (a child killed
    for memory, SIGKILL, -9, writes nothing)."""
    lines = stderr.strip().splitlines()
    if lines:
        return lines[-1]
    return "killed (SIGKILL: out of memory?)" if code in (-9, 137) else f"exit status {code}, nothing on stderr"


def _summary(results: list[dict], peak: float) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    best = {k: statistics.median(r[k] for r in ok) for k in ok[0]}
    return {**best, "runs_samples_per_second": sorted(r["samples_per_second"] for r in ok),
            "mfu": best["achieved_tflops"] / peak}


def _markdown(report: dict) -> str:
    lines = [f"{report['device']}: {report['precision']} matmul peak {report['peak_tflops']:.0f} TFLOP/s", "",
             "| shape | variant | samples/s (runs) | tokens/s | x recipe | MFU | peak GPU MB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for shape, variants in report["results"].items():
        recipe = variants.get("recipe", {}).get("samples_per_second")
        for name, r in variants.items():
            if "error" in r:
                lines.append(f"| {shape} | {name} | error: {r['error']} | | | | |")
                continue
            ratio = f"{r['samples_per_second'] / recipe:.2f}" if recipe else "-"
            runs = ", ".join(f"{x:.1f}" for x in r["runs_samples_per_second"])
            lines.append(f"| {shape} | {name} | {r['samples_per_second']:.1f} ({runs}) | {r['tokens_per_second']:,.0f} | "
                         f"{ratio} | {r['mfu']:.0%} | {r['peak_gpu_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
