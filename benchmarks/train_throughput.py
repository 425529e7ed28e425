"""mlm-adapt against the seeds' recipe, side by side on one machine, in one run.

Model: the distilbert-base-uncased architecture with random weights (speed does
not depend on the weights) and the 30,522-token uncased BERT vocabulary, taken
from the demo's all-MiniLM-L6-v2 tokenizer so that no Hub access is needed.
Text: the demo's BBC News articles plus Rotten Tomatoes reviews (~1.2M words).

Each training variant runs in its own process (clean peak-memory numbers):
  recipe-fp32 / recipe-bf16  Trainer + the course's group_texts + DataCollatorForLanguageModeling
  recipe-bf16-keep-freed     the same with mlm-adapt's malloc setting (speed.keep_freed_memory)
  mlm-adapt-*                the training step `mlm-adapt train` runs (the MLM head and the last layer's
                             feed-forward block on the masked rows only), with the
                             model loaded as `train` loads it (mlm-adapt-bf16, the default on this CPU:
                             eager attention and cpu_dropout), or with torch's dropout and transformers'
                             eager (-eager) or SDPA (-sdpa) attention
Usage:  python benchmarks/train_throughput.py [--steps 12] [--batch 16] [--repeats 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

CHUNK = 128
WARMUP = 2  # steps not timed, for every variant alike


def corpus_texts() -> list[str]:
    import csv

    from mlm_adapt.demo.assets import fetch_assets

    assets = fetch_assets()
    texts = [p.read_text(encoding="latin-1") for p in sorted(assets.news_dir.rglob("*.txt"))]
    with assets.reviews_csv.open(encoding="utf-8") as fh:
        texts += [row["text"] for row in csv.DictReader(fh)]
    return texts


def tokenizer():
    from transformers import AutoTokenizer

    from mlm_adapt.demo.assets import fetch_assets

    return AutoTokenizer.from_pretrained(fetch_assets().model_dir)


def model(attn: str = "sdpa"):
    import torch
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    return DistilBertForMaskedLM(DistilBertConfig(vocab_size=30522, attn_implementation=attn))


def loaded_model():
    """The benchmark model as `mlm-adapt train` loads it (``models.load_model``: on a CPU,
    eager attention and cpu_dropout), through a save to a temporary folder."""
    import tempfile

    from mlm_adapt.config import ModelConfig
    from mlm_adapt.modeling.loading import load_model

    with tempfile.TemporaryDirectory() as folder:
        model().save_pretrained(folder)
        return load_model(ModelConfig(folder))


# --- the seeds' preprocessing, verbatim in substance (HF course chapter 7.3) ---------------------

def recipe_preprocess(texts, tok):
    import datasets

    def tokenize_function(examples):
        result = tok(examples["text"])
        if tok.is_fast:
            result["word_ids"] = [result.word_ids(i) for i in range(len(result["input_ids"]))]
        return result

    def group_texts(examples):
        concatenated = {k: sum(examples[k], []) for k in examples.keys()}
        total = len(concatenated[list(examples.keys())[0]]) // CHUNK * CHUNK
        result = {k: [t[i: i + CHUNK] for i in range(0, total, CHUNK)] for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    ds = datasets.Dataset.from_dict({"text": texts})
    tokenized = ds.map(tokenize_function, batched=True, remove_columns=["text"], load_from_cache_file=False)
    return tokenized.map(group_texts, batched=True, load_from_cache_file=False)


def ours_preprocess(texts, tok, num_workers: int = 0):
    import datasets

    from mlm_adapt.config import DataConfig
    from mlm_adapt.data.chunking import split_and_chunk
    from mlm_adapt.data.corpus import Corpus
    from mlm_adapt.data.tokenization import tokenize_corpus

    corpus = Corpus(datasets.Dataset.from_dict({"text": texts}), "text", "benchmark")
    tokens = tokenize_corpus(corpus, tok, num_workers=num_workers)
    return split_and_chunk(tokens, DataConfig(data="benchmark", chunk_size=CHUNK, train_size=None, eval_size=100), tok, 42)


def bench_preprocessing(texts, tok, repeats: int = 3) -> dict:
    """Both pipelines cold, the Rust tokenizer alone (the two calls mlm-adapt makes: with
    word ids, and ids only), mlm-adapt with 2 tokenizing processes, interleaved ``repeats``
    times (medians); then mlm-adapt's second run (tokenization cache)."""
    import tempfile

    import datasets

    from mlm_adapt.data.corpus import Corpus
    from mlm_adapt.data.tokenization import plain_backend, tokenize_corpus

    backend = plain_backend(tok)

    def alone(call):
        for i in range(0, len(texts), 1000):  # on both cores, as mlm-adapt calls it
            call(texts[i : i + 1000], add_special_tokens=False)

    timed = {"recipe": lambda: recipe_preprocess(texts, tok), "mlm_adapt": lambda: ours_preprocess(texts, tok),
             "mlm_adapt_2_workers": lambda: ours_preprocess(texts, tok, num_workers=2),
             "tokenizer_alone": lambda: alone(backend.encode_batch),
             "tokenizer_ids_only": lambda: alone(backend.encode_batch_fast)}
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(repeats):
        for name, run in timed.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    m = {name: statistics.median(values) for name, values in seconds.items()}
    corpus = Corpus(datasets.Dataset.from_dict({"text": texts}), "text", "benchmark")
    with tempfile.TemporaryDirectory() as cache:
        tokenize_corpus(corpus, tok, cache_dir=Path(cache))
        t3 = time.perf_counter()
        tokenize_corpus(corpus, tok, cache_dir=Path(cache))
        t4 = time.perf_counter()
    ours = ours_preprocess(texts, tok)
    return {"documents": len(texts), "words": sum(len(t.split()) for t in texts), "repeats": repeats,
            **{f"{name}_seconds": value for name, value in m.items()},
            "runs_seconds": seconds, "mlm_adapt_cached_tokenize_seconds": t4 - t3,
            "recipe_chunks": len(recipe_preprocess(texts, tok)), "mlm_adapt_chunks": len(ours.train) + len(ours.eval),
            "speedup": m["recipe"] / m["mlm_adapt"], "speedup_2_workers": m["recipe"] / m["mlm_adapt_2_workers"],
            "speedup_ceiling": m["recipe"] / m["tokenizer_alone"],
            "share_of_ceiling": m["tokenizer_alone"] / m["mlm_adapt"]}


# --- training variants --------------------------------------------------------------------------

def run_recipe(precision: str, steps: int, batch: int, keep_freed: bool = False) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    if keep_freed:
        from mlm_adapt.speed import keep_freed_memory

        assert keep_freed_memory()

    tok = tokenizer()
    chunks = recipe_preprocess(corpus_texts()[:3000], tok).remove_columns(["word_ids"])
    chunks = chunks.select(range(min(len(chunks), steps * batch)))
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not times:
                times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    args = TrainingArguments(output_dir="/tmp/mlm-adapt-bench-recipe", per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=2e-5, weight_decay=0.01, bf16=precision == "bf16", report_to="none",
                             logging_strategy="no", save_strategy="no", dataloader_num_workers=0, use_cpu=True)
    trainer = Trainer(model=model(), args=args, train_dataset=chunks, callbacks=[Clock()],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15))
    trainer.train()
    return {**_result(times, batch), "eval_loss": held_out_loss(trainer.model, tok)}


def ours_training(precision: str, batch: int, attn: str, compile_encoder: bool, steps: int):
    """The set-up `mlm-adapt train` makes: (tokenizer, model, objective, optimizer, scheduler,
    accelerator, masked batches)."""
    from mlm_adapt.config import TrainConfig
    from mlm_adapt.data.batching import in_memory_batches
    from mlm_adapt.data.masking import MaskingVocab
    from mlm_adapt.system.runtime import make_accelerator
    from mlm_adapt.training.optimizer_step import optimisation

    tok = tokenizer()
    split = ours_preprocess(corpus_texts()[:3000], tok)
    config = TrainConfig(batch_size=batch, precision=precision, lr=2e-5, compile=compile_encoder)
    net = loaded_model() if attn == "mlm-adapt" else model(attn)
    accelerator, _ = make_accelerator(precision)
    from mlm_adapt.speed import tune_process

    tune_process(accelerator.device.type)  # what `mlm-adapt train` does to its process
    objective, optimizer, scheduler = optimisation(config, net, accelerator, steps)
    objective.train()
    batches = in_memory_batches(split.train, config, MaskingVocab.from_tokenizer(tok), accelerator, 0)
    return tok, net, objective, optimizer, scheduler, accelerator, batches


def run_ours(precision: str, steps: int, batch: int, attn: str, compile_encoder: bool) -> dict:
    """The step `mlm-adapt train` runs: its optimiser set-up, masking and sparse loss."""
    from mlm_adapt.training.optimizer_step import train_step

    tok, net, objective, optimizer, scheduler, accelerator, batches = ours_training(precision, batch, attn, compile_encoder, steps)
    times = [time.perf_counter()]
    for _ in range(steps):
        train_step(objective, optimizer, scheduler, accelerator, next(batches)).read()  # on a GPU: wait for it
        times.append(time.perf_counter())
    return {**_result(times, batch), "eval_loss": held_out_loss(net, tok)}


def held_out_loss(net, tok) -> float:
    """Masked-token loss on one fixed, once-masked held-out set, the same for every variant."""
    from mlm_adapt.config import MaskingConfig
    from mlm_adapt.data.held_out import mask_eval_set
    from mlm_adapt.data.masking import MaskingVocab
    from mlm_adapt.evaluation.perplexity import evaluate_loss
    from mlm_adapt.modeling.objective import MaskedLMObjective
    from mlm_adapt.system.runtime import make_accelerator

    split = ours_preprocess(corpus_texts()[:3000], tok)
    masked = mask_eval_set(split.eval, MaskingConfig(), MaskingVocab.from_tokenizer(tok), seed=42)
    accelerator, _ = make_accelerator("fp32")
    return evaluate_loss(MaskedLMObjective(net), masked, 16, accelerator).loss


def _result(times: list[float], batch: int) -> dict:
    """``times``: the first step's start, then each step's end."""
    timed = times[WARMUP:]
    rate = (len(timed) - 1) * batch / (timed[-1] - timed[0])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"samples_per_second": rate, "peak_rss_mb": peak_mb, "first_step_seconds": times[1] - times[0]}


VARIANTS = {
    "recipe-fp32": lambda s, b: run_recipe("fp32", s, b),
    "recipe-bf16": lambda s, b: run_recipe("bf16", s, b),
    # The recipe with mlm-adapt's allocator setting (speed.keep_freed_memory): how much of
    # mlm-adapt's lead is that setting alone.
    "recipe-bf16-keep-freed": lambda s, b: run_recipe("bf16", s, b, keep_freed=True),
    "mlm-adapt-fp32": lambda s, b: run_ours("fp32", s, b, "mlm-adapt", False),
    "mlm-adapt-bf16-sdpa": lambda s, b: run_ours("bf16", s, b, "sdpa", False),  # torch's dropout, SDPA
    "mlm-adapt-bf16-eager": lambda s, b: run_ours("bf16", s, b, "eager", False),  # torch's dropout, eager
    "mlm-adapt-bf16": lambda s, b: run_ours("bf16", s, b, "mlm-adapt", False),  # the default on CPUs
    "mlm-adapt-bf16-compile": lambda s, b: run_ours("bf16", s, b, "mlm-adapt", True),
}


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a size x size matrix product on this machine."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def bf16_peak() -> float:
    # Emulated bf16 runs near 0.4 GFLOP/s: a 2048^2 product would take minutes.
    from mlm_adapt.system.runtime import cpu_supports_bf16

    return matmul_peak("bfloat16") if cpu_supports_bf16() else matmul_peak("bfloat16", size=512, repeats=2)


# The flags that decide which kernels run: bf16 is native with avx512_bf16 or amx_bf16,
# emulated (several times slower than fp32) with avx2 alone.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_description() -> dict:
    """This CPU's model name, cores and kernel-relevant flags (/proc/cpuinfo), for the record."""
    import os

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
    model, flags = fields.get("model name", "unknown"), set(fields.get("flags", "").split())
    kind = "bf16-native" if {"avx512_bf16", "amx_bf16"} & flags else "avx2-only" if "avx2" in flags else "other"
    # An ISA cap (ONEDNN_MAX_CPU_ISA=AVX2 ...) turns a bf16-native CPU into an AVX2-only one for
    # the kernels: how this benchmark simulates one (docs/performance.md).
    caps = {k: os.environ[k] for k in ISA_CAPS if k in os.environ}
    if caps and kind == "bf16-native":
        from mlm_adapt.system.runtime import cpu_supports_bf16

        kind = kind if cpu_supports_bf16() else "avx2-only (ISA capped)"
    return {"model": model, "cores": os.cpu_count(), "kind": kind, "flags": [f for f in KERNEL_FLAGS if f in flags],
            "isa_caps": caps}


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def flops_per_sample(sparse: bool, mask_rate: float = 0.15) -> float:
    """Training FLOPs of one 128-token DistilBERT-base sample that the variant needs
    (gpu_throughput.flops_per_sample's count): ``sparse`` (mlm-adapt) runs the MLM head and
    the last layer's queries and position-wise part on the predicted rows only (on a CPU)."""
    from gpu_throughput import flops_per_sample as count
    from gpu_throughput import model_config

    return count(model_config("distilbert", smoke=False), CHUNK, mask_rate if sparse else 1.0, queries_on_rows=sparse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant (the median is reported)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="comma-separated variants to run (default: all; '' for preprocessing only)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args()
    if args.variant:  # child process: one variant, JSON on stdout
        print(json.dumps(VARIANTS[args.variant](args.steps, args.batch)))
        return

    report = {"cpu": cpu_description(), "steps": args.steps, "batch": args.batch, "chunk": CHUNK,
              "peak_gflops": {"fp32": matmul_peak("float32"), "bf16": bf16_peak()}}
    texts, tok = corpus_texts(), tokenizer()
    news = texts[:2225]  # the BBC articles: long documents, like IMDb reviews
    report["preprocessing"] = {
        "mixed (news + review snippets)": bench_preprocessing(texts, tok),
        "long documents (news x2)": bench_preprocessing(news * 2, tok),
    }
    print(json.dumps(report, indent=1), flush=True)
    chosen = [v for v in args.only.split(",") if v] if args.only is not None else list(VARIANTS)
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    for _ in range(args.repeats):  # interleaved, so slow drifts of the machine hit every variant
        for name in chosen:
            proc = subprocess.run([sys.executable, __file__, "--variant", name, "--steps", str(args.steps),
                                   "--batch", str(args.batch)], capture_output=True, text=True)
            if proc.returncode != 0:
                runs[name].append({"error": proc.stderr.strip().splitlines()[-1]})
            else:
                runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    report["training"] = {name: _summary(results) for name, results in runs.items()}
    _ratios(report)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(_markdown(report))


def _summary(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    rates = sorted(r["samples_per_second"] for r in ok)
    return {"samples_per_second": statistics.median(rates), "runs_samples_per_second": rates,
            "first_step_seconds": statistics.median(r["first_step_seconds"] for r in ok),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "eval_loss": statistics.mean(r["eval_loss"] for r in ok)}


def _markdown(report: dict) -> str:
    cpu = report.get("cpu", {})
    lines = [f"CPU: {cpu.get('model')}, {cpu.get('cores')} cores, {cpu.get('kind')} ({' '.join(cpu.get('flags', []))})", "",
             "| variant | samples/s (median; runs) | x fp32 recipe | x bf16 recipe | peak RSS MB | held-out loss "
             "| MFU of bf16 / fp32 peak |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["training"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | | |")
            continue
        runs = ", ".join(f"{x:.2f}" for x in r["runs_samples_per_second"])
        ratios = [f"{r[key]:.2f}" if key in r else "-" for key in ("speedup_vs_recipe-fp32", "speedup_vs_recipe-bf16")]
        bf16_mfu = f"{r['mfu_vs_bf16_peak']:.0%}" if cpu.get("kind") == "bf16-native" else "- (bf16 emulated)"
        lines.append(f"| {name} | {r['samples_per_second']:.2f} ({runs}) | {' | '.join(ratios)} | {r['peak_rss_mb']:.0f} | "
                     f"{r['eval_loss']:.4f} | {bf16_mfu} / {r['mfu_vs_fp32_peak']:.0%} |")
    for corpus, p in report["preprocessing"].items():
        lines.append(f"\npreprocessing, {corpus}: {p['words']:,} words in {p['documents']:,} documents (medians of "
                     f"{p['repeats']}): recipe {p['recipe_seconds']:.2f} s, mlm-adapt {p['mlm_adapt_seconds']:.2f} s "
                     f"({p['speedup']:.1f}x; with 2 tokenizing processes {p['mlm_adapt_2_workers_seconds']:.2f} s, "
                     f"{p['speedup_2_workers']:.1f}x); the Rust tokenizer alone {p['tokenizer_alone_seconds']:.2f} s with "
                     f"word ids ({p['speedup_ceiling']:.1f}x ceiling: mlm-adapt at {p['share_of_ceiling']:.0%} of it), "
                     f"{p['tokenizer_ids_only_seconds']:.2f} s ids only; mlm-adapt's second run "
                     f"{p['mlm_adapt_cached_tokenize_seconds']:.3f} s to tokenize "
                     f"({p['recipe_seconds'] / p['mlm_adapt_cached_tokenize_seconds']:.0f}x)")
    compiled = report["training"].get("mlm-adapt-bf16-compile", {})
    if "break_even_samples" in compiled:
        lines.append(f"\n--compile: first step {compiled['first_step_seconds']:.1f} s vs "
                     f"{report['training']['mlm-adapt-bf16']['first_step_seconds']:.1f} s eager; it pays back after "
                     f"{compiled['break_even_samples']:,.0f} training samples (if it is faster at all)")
    return "\n".join(lines)


def _ratios(report: dict) -> None:
    train = report["training"]
    for name, result in train.items():
        if "error" in result:
            continue
        sparse = name.startswith("mlm-adapt")
        achieved = flops_per_sample(sparse) * result["samples_per_second"] / 1e9
        result["achieved_gflops"] = achieved
        result["mfu_vs_bf16_peak"] = achieved / report["peak_gflops"]["bf16"]
        result["mfu_vs_fp32_peak"] = achieved / report["peak_gflops"]["fp32"]
        for base in ("recipe-fp32", "recipe-bf16"):
            if "samples_per_second" in train.get(base, {}):
                result[f"speedup_vs_{base}"] = result["samples_per_second"] / train[base]["samples_per_second"]
    eager, compiled = train.get("mlm-adapt-bf16", {}), train.get("mlm-adapt-bf16-compile", {})
    if "samples_per_second" in eager and "samples_per_second" in compiled:
        saved = 1 / eager["samples_per_second"] - 1 / compiled["samples_per_second"]  # seconds per sample
        extra = compiled["first_step_seconds"] - eager["first_step_seconds"]
        compiled["break_even_samples"] = extra / saved if saved > 0 else float("inf")


if __name__ == "__main__":
    main()
