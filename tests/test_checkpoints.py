"""Checkpoints, exact resume after a real SIGKILL, interrupts, refused resumes, numerical faults."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import train_config
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.training import checkpoints
from mlm_adapt.training.loop import train

# What differs between an interrupted-and-resumed run and an uninterrupted one by design.
TIMING = {"train_samples_per_second", "train_runtime_seconds", "steps_run", "seconds"}


def _command(model: Path, data: Path, output: Path, *extra: str, train_size: int = 96, max_steps: int = 24) -> list[str]:
    # 96 chunks at batch 16: epochs of 6 steps, so a 24-step run crosses three epoch boundaries.
    return [sys.executable, "-m", "mlm_adapt", "train", "--model", str(model), "--data", str(data), "--output", str(output),
            "--chunk-size", "64", "--eval-size", "20", "--train-size", str(train_size), "--batch-size", "16",
            "--max-steps", str(max_steps), "--keep-checkpoints", "2", "--precision", "fp32", "--lr", "5e-4", *extra]


def _metrics(output: Path) -> dict:
    metrics = json.loads((output / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "process ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--lora-rank", "8")], ids=["full", "lora"])
def test_sigkill_then_resume_matches_an_uninterrupted_run(slower_bert, data_root, tmp_path, extra):
    data = data_root / "docs.txt"
    reference = tmp_path / "reference"
    subprocess.run(_command(slower_bert, data, reference, "--save-steps", "3", *extra), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(slower_bert, data, killed, "--save-steps", "3", *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (killed / "checkpoints" / "step-6" / checkpoints.STATE_FILE).exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"

    resumed = subprocess.run(_command(slower_bert, data, killed, "--save-steps", "3", "--resume", *extra), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    assert _metrics(killed) == _metrics(reference)
    assert len(checkpoints.complete_checkpoints(killed)) <= 2
    # It really resumed (a restart from step 0 would give the same numbers: runs are
    # deterministic), and from before step 18, so the resumed part crossed an epoch
    # boundary: a reshuffle and epoch-seeded masks computed after the restart.
    ran = json.loads((killed / "metrics.json").read_text())["steps_run"]
    assert json.loads((reference / "metrics.json").read_text())["steps_run"] == 24
    assert 6 < ran < 24, ran
    assert [h["epoch"] for h in _metrics(killed)["history"]] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_the_interrupted_step_and_exits_130(slower_bert, data_root, tmp_path, sig):
    # No --save-steps and 25-step epochs: a checkpoint before step 25 can only be the
    # one the interrupt writes.
    out = tmp_path / "o"
    proc = subprocess.Popen(_command(slower_bert, data_root / "docs.txt", out, train_size=400, max_steps=200),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Signal once the progress bar shows a finished step (the handler is installed by then),
    # not after a sleep: on a fast machine a fixed sleep could outlast the 25-step epoch.
    seen, shown = "", 0
    while shown < 1:
        char = proc.stderr.read(1)
        assert char or proc.poll() is None, "the run ended before training"
        seen += char
        if char in "\r\n":
            shown = max([int(n) for n in re.findall(r"training:[^\r\n]*?(\d+)/200", seen)] or [0])
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    step = int(re.search(r"interrupted at step (\d+)", err).group(1))
    # A step lasts ~0.1 s: the signal lands within a step or two of the one the bar showed.
    assert shown <= step <= shown + 2 < 25, (shown, err[-500:])
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == [f"step-{step}"]
    assert json.loads((out / "checkpoints" / f"step-{step}" / checkpoints.STATE_FILE).read_text())["step"] == step
    assert not (out / "metrics.json").exists()


def test_resume_with_gradient_accumulation_matches_the_uninterrupted_run(bert_dir, data_root, tmp_path):
    options = dict(max_steps=6, save_steps=2, keep_checkpoints=None, grad_accum=2, batch_size=8, train_size=40)
    full = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "full", **options))
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-2", tmp_path / "resumed" / "checkpoints" / "step-2")
    resumed = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "resumed", resume=True, **options))
    assert (full["steps_run"], resumed["steps_run"], resumed["steps"]) == (6, 4, 6)
    assert len(full["history"]) >= 2  # 40 chunks at 16 a step: epochs end at steps 3 and 6
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in full.items() if k not in TIMING}


def test_half_written_checkpoint_is_ignored_and_resume_refuses_changed_options(bert_dir, data_root, tmp_path):
    out = tmp_path / "o"
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=6, save_steps=2, keep_checkpoints=None))
    steps = [p.name for p in checkpoints.complete_checkpoints(out)]
    assert steps == ["step-2", "step-4"]  # no checkpoint for the final step: the final model is saved instead
    half = out / "checkpoints" / ".tmp-step-5"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert checkpoints.complete_checkpoints(out)[-1].name == "step-4"

    with pytest.raises(MlmAdaptError, match=r"options changed.*lr: 0.001 -> 0.002"):
        train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=6, save_steps=2, lr=2e-3, resume=True))
    metrics = train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=6, save_steps=2, resume=True))
    assert metrics["steps"] == 6


def test_keep_checkpoints_prunes_old_ones(bert_dir, data_root, tmp_path):
    out = tmp_path / "o"
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=9, save_steps=2, keep_checkpoints=2))
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-6", "step-8"]


def test_resume_without_a_checkpoint(bert_dir, data_root, tmp_path):
    with pytest.raises(MlmAdaptError, match="no complete checkpoint"):
        train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", resume=True))


def test_nan_loss_stops_naming_the_step(bert_dir, data_root, tmp_path, monkeypatch):
    import torch

    from mlm_adapt.modeling import objective

    real = objective.masked_lm_nll
    calls = {"n": 0}

    def poisoned(model, *args, **kwargs):
        nll, count = real(model, *args, **kwargs)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 3:
                return nll * torch.tensor(float("nan")), count
        return nll, count

    monkeypatch.setattr(objective, "masked_lm_nll", poisoned)
    with pytest.raises(MlmAdaptError, match=r"loss became nan at step 3; the last good checkpoint is .*step-2"):
        train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=6, save_steps=2))


def test_overwrite_leaves_no_checkpoint_of_the_earlier_run(bert_dir, data_root, tmp_path):
    out = tmp_path / "o"
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=9, save_steps=2, keep_checkpoints=2))
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-6", "step-8"]
    (out / "checkpoints" / ".tmp-step-9").mkdir()  # and a half-written one
    # Run B writes step-3 and ends at step 4 (as if interrupted after its checkpoint).
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=4, save_steps=3, keep_checkpoints=2,
                       overwrite=True, lr=2e-3))
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-3"]
    assert not (out / "checkpoints" / ".tmp-step-9").exists()
    saved = json.loads((out / "checkpoints" / "step-3" / checkpoints.STATE_FILE).read_text())
    assert saved["options"]["lr"] == 2e-3  # run B's own


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    from accelerate import Accelerator

    out = tmp_path / "o"
    for step in (6, 8):  # higher step numbers than the new run's (not of this run)
        folder = checkpoints.checkpoint_root(out) / f"step-{step}"
        folder.mkdir(parents=True)
        (folder / checkpoints.STATE_FILE).write_text("{}")
    written = checkpoints.save_checkpoint(Accelerator(cpu=True), out, {"step": 3}, keep=2)
    assert written.name == "step-3" and written in checkpoints.complete_checkpoints(out)
    assert len(checkpoints.complete_checkpoints(out)) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KB tmpfs: room for one checkpoint of the tiny BERT, not two (needs root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_an_error_line_and_resume_continues(small_disk, bert_dir, data_root):
    out = small_disk / "o"
    command = [sys.executable, "-m", "mlm_adapt", "train", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"),
               "--output", str(out), "--chunk-size", "48", "--eval-size", "20", "--train-size", "200", "--batch-size", "16",
               "--max-steps", "12", "--save-steps", "2", "--keep-checkpoints", "10", "--precision", "fp32"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr[-2000:]
    error = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no space left on device while saving checkpoint step-" in error[0], full.stderr[-2000:]
    assert "--resume" in error[0] and "Traceback" not in full.stderr
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the partial folder does not go on filling the disk
    kept = checkpoints.complete_checkpoints(out)
    assert kept and json.loads((kept[-1] / checkpoints.STATE_FILE).read_text())["step"] == int(kept[-1].name[5:])
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {kept[-1]}" in resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == 12


def test_a_full_disk_while_saving_the_final_model_is_an_error_line(bert_dir, data_root, tmp_path, monkeypatch):
    import errno

    from mlm_adapt.outputs import reporting

    def full(folder, *args, **kwargs):
        (folder / "report.html").write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reporting, "write_run_report", full)
    out = tmp_path / "o"
    with pytest.raises(MlmAdaptError, match=r"no space left on device while saving the final model .*--resume.*step-2"):
        train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=3, save_steps=2))
    assert not list(out.glob(".staging-*")) and not (out / "metrics.json").exists()
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-2"]


def test_a_failure_that_is_not_a_full_disk_keeps_its_traceback(tmp_path):
    from accelerate import Accelerator

    class Broken(Accelerator):
        def save_state(self, *args, **kwargs):
            raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        checkpoints.save_checkpoint(Broken(cpu=True), tmp_path / "o", {"step": 1}, keep=2)
    assert not list(checkpoints.checkpoint_root(tmp_path / "o").glob(".tmp-*"))


def test_a_runs_output_does_not_carry_accelerates_tied_weights_notice(bert_dir, data_root, tmp_path):
    """accelerate says "Removed shared tensor {...decoder.weight...}" at every checkpoint of a model whose
    MLM decoder is tied to its embeddings; expected and harmless, it is kept out of the run's output."""
    out = tmp_path / "run"
    done = subprocess.run(_command(bert_dir, data_root / "docs.txt", out, max_steps=2) + ["--save-steps", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoints" / "step-1").is_dir()  # a checkpoint was written, so the notice would have been
    assert "Removed shared tensor" not in done.stdout + done.stderr
    assert "training" in done.stderr  # the output was captured at all
