"""Where mlm-adapt's CPU training step spends its time, timed without the profiler.

torch.profiler inflates large memory-bound ops here (it put the 94 MB word-embedding
gradient's zero-fill at 165 ms a step; timed in the step it is a few ms), so this
script times the real step with ``time.perf_counter`` and autograd hooks instead, and
compares variants side by side in one process, interleaved:

  phases       forward / backward / clipping / AdamW of the step `mlm-adapt train` runs
  embedding    the word embedding's whole backward (its output's gradient hook to the
               tied weight's post-accumulate hook): zero-fill, scatter-add, sum with the decoder's
  casts        all matrix weights fp32 -> bf16 and back (what autocast re-casts each step)
  dropout      the step with dropout p 0.1 against p 0 (what the masks cost)
  masks        cpu_dropout against its previous form (bool mask, randint) and torch's dropout,
               forward + backward, on attention-probability and hidden-state shapes
  packing      forward + backward with --packing's document masks against plain chunks
  last_layer   whole steps with the last layer's queries and position-wise part on the masked rows only
               (last_layer, the default) against the full layer, in bf16 and fp32

Model and data as in train_throughput.py (DistilBERT shape, 16 x 128, random weights).

    MLM_ADAPT_CACHE=/tmp/mlmcache python benchmarks/step_breakdown.py [--steps 8] [--out breakdown.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import train_throughput as bench


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 2)


def timed_step(objective, optimizer, scheduler, accelerator, micro_batches) -> list[float]:
    """optimizer_step.train_step's work, with a clock between its phases."""
    from mlm_adapt.data.masking import IGNORE_INDEX
    from mlm_adapt.modeling.objective import device_batch

    marks = [time.perf_counter()]
    tokens = sum(int(np.count_nonzero(labels != IGNORE_INDEX)) for *_, labels in micro_batches)
    for arrays in micro_batches:
        nll, _ = objective(**device_batch(arrays, accelerator.device))
        marks.append(time.perf_counter())
        accelerator.backward(nll / tokens)
        marks.append(time.perf_counter())
    accelerator.clip_grad_norm_(objective.parameters(), 1.0)
    marks.append(time.perf_counter())
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    return np.diff(marks).tolist()


def phases_and_dropout(precision: str, steps: int) -> dict:
    _, net, objective, optimizer, scheduler, accelerator, batches = bench.ours_training(precision, 16, "mlm-adapt", False, 1000)
    embedding = net.get_input_embeddings()
    marks: dict[str, float] = {}

    def on_output(module, args, out) -> None:  # returns None: a forward hook's return value replaces the output
        out.register_hook(lambda grad: marks.__setitem__("output_grad", time.perf_counter()))

    embedding.register_forward_hook(on_output)
    embedding.weight.register_post_accumulate_grad_hook(lambda p: marks.__setitem__("accumulated", time.perf_counter()))
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    rates = {m: m.p for m in dropouts}
    runs: dict[str, list] = {"dropout on": [], "dropout off": []}
    embedding_backward = []
    for step in range(2 * steps + 2):
        mode = "dropout on" if step % 2 == 0 else "dropout off"
        for m in dropouts:  # attention dropout reads module.dropout.p too: the same modules
            m.p = rates[m] if mode == "dropout on" else 0.0
        phases = timed_step(objective, optimizer, scheduler, accelerator, next(batches))
        if step >= 2:  # allocator warm-up and kernel selection
            runs[mode].append(phases)
            if mode == "dropout on":
                embedding_backward.append(marks["accumulated"] - marks["output_grad"])
    names = ("forward", "backward", "clip", "adamw")
    on, off = np.array(runs["dropout on"]), np.array(runs["dropout off"])
    return {
        "phases_ms": {n: _median_ms(on[:, i].tolist()) for i, n in enumerate(names)},
        "step_ms": {"dropout on": _median_ms(on.sum(axis=1).tolist()), "dropout off": _median_ms(off.sum(axis=1).tolist())},
        "embedding_backward_ms": _median_ms(embedding_backward),
    }


def last_layer_tail(precision: str, steps: int) -> dict:
    """Whole steps with the last layer's queries and position-wise part on the masked rows
    (the default, ``last_layer``) against the full last layer, interleaved in one process."""
    from mlm_adapt.speed import last_layer
    from mlm_adapt.training.optimizer_step import train_step

    _, _, objective, optimizer, scheduler, accelerator, batches = bench.ours_training(precision, 16, "mlm-adapt", False, 1000)
    tail = last_layer.trimmable
    times: dict[str, list[float]] = {"masked rows": [], "full layer": []}
    for step in range(2 * steps + 2):
        mode = "masked rows" if step % 2 == 0 else "full layer"
        last_layer.trimmable = tail if mode == "masked rows" else (lambda encoder: None)
        start = time.perf_counter()
        train_step(objective, optimizer, scheduler, accelerator, next(batches)).read()
        if step >= 2:
            times[mode].append(time.perf_counter() - start)
    last_layer.trimmable = tail
    row = {f"{mode} step_ms": _median_ms(t) for mode, t in times.items()}
    row["x full layer"] = round(statistics.median(times["full layer"]) / statistics.median(times["masked rows"]), 3)
    return row


def casts(repeats: int = 5) -> dict:
    net = bench.loaded_model()
    weights = [p.detach() for p in net.parameters() if p.ndim == 2]
    down, up = [], []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        halves = [w.to(torch.bfloat16) for w in weights]
        middle = time.perf_counter()
        [h.to(torch.float32) for h in halves]
        down.append(middle - start)
        up.append(time.perf_counter() - middle)
    return {"parameters_in_matrices": sum(w.numel() for w in weights), "fp32_to_bf16_ms": _median_ms(down[1:]),
            "bf16_to_fp32_ms": _median_ms(up[1:])}


def previous_cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """cpu_dropout as it was before 2026-11-23 (bool mask, randint), kept as the baseline."""
    dropped, n = round(p * 65536), x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = words.view(torch.int16)[:n].view(x.shape) >= dropped - 32768
    return x * keep * (65536 / (65536 - dropped))


def masks(repeats: int = 15) -> dict:
    from mlm_adapt.speed.cpu_dropout import cpu_dropout

    forms = {"cpu_dropout": lambda x: cpu_dropout(x, 0.1, True), "previous": lambda x: previous_cpu_dropout(x, 0.1),
             "torch": lambda x: torch.nn.functional.dropout(x, 0.1, True)}
    results = {}
    for label, shape in (("attention probabilities", (16, 12, 128, 128)), ("hidden states", (16, 128, 768))):
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(*shape, dtype=dtype, requires_grad=True)
            grad = torch.randn(*shape, dtype=dtype)
            times: dict[str, list[float]] = {name: [] for name in forms}
            for _ in range(repeats + 3):
                for name, form in forms.items():
                    start = time.perf_counter()
                    form(x).backward(grad)
                    times[name].append(time.perf_counter() - start)
            row = {name: _median_ms(t[3:]) for name, t in times.items()}
            row["x previous"] = round(row["previous"] / row["cpu_dropout"], 2)
            row["x torch"] = round(row["torch"] / row["cpu_dropout"], 2)
            results[f"{label} {list(shape)} {str(dtype).removeprefix('torch.')}"] = row
    return results


def packing(repeats: int = 6) -> dict:
    from mlm_adapt.modeling.objective import MaskedLMObjective

    net = bench.loaded_model().train()
    ids = torch.randint(1000, 30000, (16, bench.CHUNK), generator=torch.Generator().manual_seed(0))
    ids[:, ::30] = 102  # [SEP] ends a ~30-token document, as with short reviews
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.15, ids, -100)
    positions = torch.nonzero(labels.reshape(-1) != -100).squeeze(1)
    objectives = {"plain": MaskedLMObjective(net), "packing": MaskedLMObjective(net, separator=102)}
    times: dict[str, list] = {name: [] for name in objectives}
    for repeat in range(repeats + 2):
        for name, objective in objectives.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                nll, _ = objective(ids, None, labels, positions=positions)
            middle = time.perf_counter()
            nll.backward()
            net.zero_grad(set_to_none=True)
            if repeat >= 2:
                times[name].append((middle - start, time.perf_counter() - middle))
    return {name: {"forward_ms": _median_ms([f for f, _ in t]), "backward_ms": _median_ms([b for _, b in t])}
            for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per dropout setting")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/breakdown.json"))
    args = parser.parse_args()
    from mlm_adapt.system.runtime import cpu_supports_bf16

    precision = "bf16" if cpu_supports_bf16() else "fp32"
    report = {"cpu": bench.cpu_description(), "precision": precision,
              "peak_gflops": {"fp32": bench.matmul_peak("float32"), "bf16": bench.bf16_peak()},
              "step": phases_and_dropout(precision, args.steps), "casts": casts(), "masks": masks(),
              "packing": packing(),
              "last_layer": {p: last_layer_tail(p, args.steps) for p in ("bf16", "fp32") if p == "fp32" or precision == "bf16"}}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
