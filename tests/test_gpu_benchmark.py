"""The GPU benchmark's own logic, on the CPU: what the first lent GPU runs must not fail
for a reason a CPU can see (no timing here: benchmarks/ measures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_throughput  # noqa: E402


def test_a_child_killed_for_memory_is_reported_not_an_index_error():
    assert "out of memory" in gpu_throughput.child_error(-9, "")
    assert gpu_throughput.child_error(1, "Traceback ...\nRuntimeError: CUDA error") == "RuntimeError: CUDA error"
    assert gpu_throughput.child_error(3, "  \n") == "exit status 3, nothing on stderr"


def test_a_compiled_encoder_is_counted_with_its_full_last_layer():
    config = gpu_throughput.model_config("distilbert", smoke=False)
    full = gpu_throughput.flops_per_sample(config, 128, 0.15, trims_last_layer=False)
    trimmed = gpu_throughput.flops_per_sample(config, 128, 0.15)
    assert full > trimmed
    # The full last layer: what trimming saves is the last layer's position-wise work on 85% of rows.
    d, _, ff = gpu_throughput.dimensions(config)
    assert full - trimmed == pytest.approx(3 * 128 * 0.85 * 2 * (2 * d * ff + d * d))


def test_pre_ampere_gpus_are_benchmarked_in_fp16(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert gpu_throughput.precision(smoke=False) == "fp16"


@pytest.mark.slow
def test_the_sync_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "sync.json"
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent / "src")}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_throughput.py"), "--sync-check", "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    cases = json.loads(out.read_text())["cases"]
    assert set(cases.values()) == {"ok"} and any("packing" in name for name in cases)
