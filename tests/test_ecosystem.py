"""Trackers and data-parallel launches (the Hub: test_hub.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, train_config
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.training.loop import train


def test_push_to_hub_offline_fails_before_training(bert_dir, data_root, tmp_path):
    with pytest.raises(MlmAdaptError, match="offline mode is on"):
        train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", push_to_hub="me/adapted"))
    assert not (tmp_path / "o").exists()


def test_missing_tracker_package_is_named(bert_dir, data_root, tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(MlmAdaptError, match="pip install wandb"):
        train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=1, report_to="wandb"))


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed (pip install -e '.[test]')")
def test_tensorboard_logs_the_metrics_json_numbers(bert_dir, data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "o"
    metrics = train(train_config(bert_dir, data_root / "docs.txt", out, epochs=2, report_to="tensorboard"))
    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    perplexities = [e.value for e in events.Scalars("eval/perplexity")]
    assert perplexities == pytest.approx([h["perplexity"] for h in metrics["history"]], rel=1e-6)
    assert events.Scalars("perplexity_after")[0].value == pytest.approx(metrics["perplexity_after"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--lora-rank", "4", "--lr", "5e-3")], ids=["full", "lora"])
def test_two_process_data_parallel_run_matches_one_process(bert_no_dropout, data_root, tmp_path, extra):
    # 2 processes x 8 (gloo DDP) against 1 x 16: same global batch, same masks.
    common = ["train", "--model", str(bert_no_dropout), "--data", str(data_root / "docs.txt"), "--chunk-size", "48",
              "--eval-size", "40", "--max-steps", "6", "--precision", "fp32", "--lr", "1e-3", "--seed", "5", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "mlm_adapt", *common, "--batch-size", "16", "--output", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                          "-m", "mlm_adapt", *common, "--batch-size", "8", "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)  # really data-parallel
    assert two["eval_masked_tokens"] == one["eval_masked_tokens"]  # evaluation shards are summed over processes
    assert two["perplexity_before"] == pytest.approx(one["perplexity_before"], rel=1e-5)
    # Adam's first steps move every weight by about +-lr whatever its gradient's size, so
    # float-summation noise in tiny gradients shows: "close", not bit-identical.
    assert two["perplexity_after"] == pytest.approx(one["perplexity_after"], rel=0.02)
    assert two["perplexity_after"] < two["perplexity_before"]
    assert sorted(p.name for p in (tmp_path / "two").glob("*.safetensors")) == ["model.safetensors"]
    # The word ledger from both processes' shares: the base's NLL on the same masks is one
    # process's, and the saved model's adds up to its perplexity.
    assert two["words"]["base_nll"] == pytest.approx(one["words"]["base_nll"], rel=1e-5)
    assert two["words"]["model_nll"] == pytest.approx(math.log(two["perplexity_after"]) * two["eval_masked_tokens"], rel=1e-5)



@pytest.mark.slow
def test_two_processes_save_the_selected_step_and_its_word_ledger(bert_dir, data_root, tmp_path):
    # --select best under DDP: every process loads the selected weights the main process
    # kept, and scores its share of the ledger with them. test_selection's overfitting run
    # (2 processes x 2 = its global batch of 4): its best comes well before its last step.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                          "-m", "mlm_adapt", "train", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"),
                          "--chunk-size", "48", "--eval-size", "40", "--train-size", "4", "--batch-size", "2", "--max-steps", "40",
                          "--lr", "2e-2", "--warmup-ratio", "0", "--seed", "7", "--select", "best", "--precision", "fp32",
                          "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    best = min(metrics["history"], key=lambda h: h["perplexity"])
    assert metrics["processes"] == 2 and metrics["selected_step"] == best["step"] < metrics["steps"]
    assert metrics["perplexity_after"] == pytest.approx(best["perplexity"], rel=1e-5)
    words = metrics["words"]
    assert words["model_nll"] == pytest.approx(math.log(best["perplexity"]) * metrics["eval_masked_tokens"], rel=1e-5)
    assert "What changed, word by word" in (tmp_path / "two" / "report.html").read_text()

@pytest.mark.slow
def test_two_processes_finish_with_uneven_shards(bert_dir, data_root, tmp_path):
    # 17 training chunks at a global batch of 2 x 4 leave 1 over, too few for two processes
    # (dropped, or one would wait for the other's gradients forever); 9 evaluation chunks
    # at batch 4 give one process two forward passes and the other one (it runs a dummy pass).
    data = ["--data", str(data_root / "docs.txt"), "--chunk-size", "48", "--eval-size", "9", "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                          "-m", "mlm_adapt", "train", "--model", str(bert_dir), *data, "--train-size", "17", "--epochs", "1",
                          "--precision", "fp32", "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (metrics["processes"], metrics["steps"], metrics["train_chunks"], metrics["eval_chunks"]) == (2, 2, 17, 9)
    alone = subprocess.run([sys.executable, "-m", "mlm_adapt", "evaluate", "--model", str(tmp_path / "two"), *data,
                            "--precision", "fp32", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    result = json.loads(alone.stdout)
    assert result["masked_tokens"] == metrics["eval_masked_tokens"]  # the dummy pass counted nothing
    assert result["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=1e-5)


def test_access_token_never_reaches_the_output(bert_dir, data_root, tmp_path, monkeypatch, capsys):
    secret = "hf_NotARealTokenButSecret123"
    monkeypatch.setenv("HF_TOKEN", secret)
    out = tmp_path / "o"
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=2, save_steps=1, report_to="tensorboard"
                  if importlib.util.find_spec("tensorboard") else "none"))
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def _children(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e.split(b"=", 1)[1]) for e in environ if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.slow
def test_a_signal_to_one_process_stops_every_process_at_the_same_step(slower_bert, data_root, tmp_path):
    # SIGINT reaches one rank only: both must stop at one step and write one complete
    # checkpoint (a lone rank stopping would leave the other waiting in its all-reduce).
    import re
    import signal

    from mlm_adapt.training import checkpoints

    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from conftest import free_port

    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                             "-m", "mlm_adapt", "train", "--model", str(slower_bert), "--data", str(data_root / "docs.txt"),
                             "--chunk-size", "64", "--eval-size", "20", "--train-size", "400", "--batch-size", "8",
                             "--max-steps", "200", "--precision", "fp32", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    seen, shown = "", 0
    while shown < 1:
        char = proc.stderr.read(1)
        assert char or proc.poll() is None, seen[-3000:]
        seen += char
        if char in "\r\n":
            shown = max([int(n) for n in re.findall(r"training:[^\r\n]*?(\d+)/200", seen)] or [0])
    ranks = {_rank_of(pid): pid for pid in _children(proc.pid)}
    os.kill(ranks[1], signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # the ranks disagreed and hang: kill them all, then fail
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the processes did not stop together (hung)") from None
    steps = {int(s) for s in re.findall(r"interrupted at step (\d+)", err)}
    assert len(steps) == 1, err[-3000:]
    step = steps.pop()
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == [f"step-{step}"]
    saved = {p.name for p in (out / "checkpoints" / f"step-{step}").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl", checkpoints.STATE_FILE} <= saved, saved
