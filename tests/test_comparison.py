"""``mlm-adapt compare`` end to end on real processes: recipes x seeds as plain run folders,
reused when finished, resumed when killed, refused on another split; compare.json and
report.html; every bad input the command names."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import launch, make_documents, one_word_label_files
from mlm_adapt.training import checkpoints


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare-inputs")
    sentiment, _ = one_word_label_files(root, 200, doc_seed=3, label_seed=4)
    general = root / "general.txt"
    general.write_text("\n".join(make_documents(150, seed=5)) + "\n", encoding="utf-8")
    pool = root / "pool.txt"
    pool.write_text("\n".join(make_documents(200, seed=8)) + "\n", encoding="utf-8")
    return {"task": sentiment, "general": general, "pool": pool}


def command(model: Path, data: Path, inputs: dict, output: Path, *extra: str, steps: int = 3) -> list[str]:
    return [sys.executable, "-m", "mlm_adapt", "compare", "--model", str(model), "--data", str(data), "--task-data",
            str(inputs["task"]), "--general-data", str(inputs["general"]), "--output", str(output), "--max-steps", str(steps),
            "--batch-size", "8", "--chunk-size", "48", "--eval-size", "20", "--precision", "fp32", "--lr", "1e-3", *extra]


@pytest.fixture(scope="module")
def finished(bert_dir, data_root, inputs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("compare") / "cmp"
    done = launch(command(bert_dir, data_root / "docs.txt", inputs, out, "--recipes", "dapt,tapt,dapt+tapt", "--seeds", "2"),
                  timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_every_recipe_and_seed_is_a_plain_run_folder_measured_on_one_split(finished):
    out, done = finished
    result = json.loads((out / "compare.json").read_text())
    assert set(result["recipes"]) == {"dapt", "tapt", "dapt+tapt"}
    assert result["tested_rows"] > 20 and result["seeds"] == [1, 2]
    for name, recipe in result["recipes"].items():
        assert [r["seed"] for r in recipe["runs"]] == [1, 2]
        for run in recipe["runs"]:
            folder = Path(run["folder"])
            assert folder == out / name / f"seed-{run['seed']}"
            assert (folder / "model.safetensors").is_file() and (folder / "config.yaml").is_file()
            assert not checkpoints.complete_checkpoints(folder)  # a finished run's are dropped
            metrics = json.loads((folder / "metrics.json").read_text())
            assert metrics["steps"] == (1 if name == "dapt+tapt" else 3)  # dapt+tapt: 2 + 1 steps, the same total
        task = recipe["task"]
        assert task["interval"][0] <= task["difference"] <= task["interval"][1]
        assert task["verdict"] in ("helps", "hurts", "no measurable difference")
        assert len(task["single_runs"]) == 2 and 0 <= task["ahead"] <= 1
        assert recipe["domain_perplexity"]["ratio"] > 0 and recipe["general_perplexity"]["ratio"] > 0
    assert json.loads((out / "dapt+tapt" / "seed-1-stage-1" / "metrics.json").read_text())["steps"] == 2
    assert {(p["first"], p["second"]) for p in result["pairs"]} == {("dapt", "tapt"), ("dapt", "dapt+tapt"), ("tapt", "dapt+tapt")}
    assert result["domain_overlap"] == {"dapt": 0, "tapt": 0, "dapt+tapt": 0}
    assert "recommendation" in done.stdout and result["recommendation"]["reason"]
    assert "<img" in (out / "report.html").read_text() and set(result["seconds"]) >= {"training", "measurement", "total"}


def test_the_runs_share_the_split_and_differ_in_the_training_seed(finished):
    out, _ = finished
    import yaml

    one, two = (yaml.safe_load((out / "tapt" / f"seed-{k}" / "config.yaml").read_text()) for k in (1, 2))
    assert one["split_seed"] == two["split_seed"] == 42 and (one["seed"], two["seed"]) == (1, 2)
    first, second = (json.loads((out / "tapt" / f"seed-{k}" / "metrics.json").read_text()) for k in (1, 2))
    assert first["perplexity_before"] == second["perplexity_before"]  # the same held-out documents and masks
    assert first["log_history"][0]["loss"] != second["log_history"][0]["loss"]  # another order, other masks


def test_a_second_run_reuses_every_finished_run_and_measurement(finished, bert_dir, data_root, inputs):
    out, _ = finished
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/metrics.json")}
    result = json.loads((out / "compare.json").read_text())
    again = launch(command(bert_dir, data_root / "docs.txt", inputs, out, "--recipes", "dapt,tapt,dapt+tapt", "--seeds", "2",
                           "--json"), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/metrics.json")} == before
    second = json.loads(again.stdout)
    assert second["recipes"]["tapt"]["task"] == result["recipes"]["tapt"]["task"]
    assert second["seconds"]["training"] < 5


def test_a_run_folder_on_another_split_is_refused_and_nothing_is_trained(finished, bert_dir, data_root, inputs):
    out, _ = finished
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    refused = launch(command(bert_dir, data_root / "docs.txt", inputs, out, "--recipes", "dapt,tapt,dapt+tapt", "--seeds", "2",
                             "--split-seed", "7"), timeout=300)
    assert refused.returncode == 2
    assert "trained on another split" in refused.stderr and "split_seed" in refused.stderr
    assert refused.stderr.count("error:") == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.slow
def test_a_killed_comparison_resumes_its_interrupted_run(slower_bert, data_root, inputs, tmp_path):
    out = tmp_path / "cmp"
    args = command(slower_bert, data_root / "docs.txt", inputs, out, "--recipes", "dapt", "--seeds", "1", steps=24)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folder = out / "dapt" / "seed-1"
    deadline = time.monotonic() + 300
    while not (folder / "checkpoints" / "step-6" / checkpoints.STATE_FILE).exists():  # compare checkpoints every 24 / 4
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (folder / "metrics.json").exists(), "the run finished before it was killed"
    resumed = launch(args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 24 and metrics["steps_run"] < 24
    assert json.loads((out / "compare.json").read_text())["recipes"]["dapt"]["runs"] == [{"seed": 1, "folder": str(folder)}]


def test_a_plan_trains_elsewhere_and_compare_collects_it(bert_dir, data_root, inputs, tmp_path):
    out = tmp_path / "cmp"
    args = command(bert_dir, data_root / "docs.txt", inputs, out, "--recipes", "tapt", "--seeds", "1")
    planned = launch(args + ["--plan"], timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    lines = (out / "plan.txt").read_text().splitlines()
    assert lines == [f"mlm-adapt train --config {out / 'tapt' / 'seed-1.yaml'}"]
    assert not (out / "tapt" / "seed-1").exists()  # a plan trains nothing
    trained = launch([sys.executable, "-m", "mlm_adapt", "train", "--config", str(out / "tapt" / "seed-1.yaml")], timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    collected = launch(args + ["--json"], timeout=300)
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert json.loads(collected.stdout)["seconds"]["training"] < 5  # the job's run, not a new one


@pytest.mark.parametrize("extra, message", [
    (("--recipes", "dapt,magic"), "unknown recipe 'magic'"),
    (("--seeds", "0"), "--seeds must be a positive number"),
    (("--recipes", "curated"), "recipe curated needs --pool"),
    (("--recipes", "dapt,dapt"), "lists a recipe twice"),
])
def test_bad_input_is_one_error_line_and_nothing_written(bert_dir, data_root, inputs, tmp_path, extra, message):
    out = tmp_path / "cmp"
    done = launch(command(bert_dir, data_root / "docs.txt", inputs, out, *extra), timeout=300)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("error:") == 1, done.stderr[-2000:]
    assert not out.exists()


def test_recipes_missing_their_inputs_are_refused(bert_dir, data_root, inputs, tmp_path, capsys):
    from conftest import run_main

    out = tmp_path / "cmp"
    base = ["compare", "--model", str(bert_dir), "--output", str(out), "--max-steps", "2"]
    status, _, err = run_main(capsys, *base, "--data", str(data_root / "docs.txt"), "--recipes", "tapt")
    assert status == 2 and "recipe tapt needs --task-data" in err
    status, _, err = run_main(capsys, *base, "--task-data", str(inputs["task"]), "--recipes", "dapt,tapt")
    assert status == 2 and "recipe dapt needs --data" in err
    status, _, err = run_main(capsys, "compare", "--model", str(bert_dir), "--output", str(out), "--task-data",
                              str(inputs["task"]), "--recipes", "tapt")
    assert status == 2 and "give --max-steps" in err
    assert not out.exists()
