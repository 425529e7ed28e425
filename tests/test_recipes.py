"""Each recipe module builds its runs from the shared options: what each trains on, for how
many steps, from which model; recipes are found by module, and NAME+lora composes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import train_config
from mlm_adapt import recipes
from mlm_adapt.config import DataConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.recipes.recipe import Inputs, split_steps


@pytest.fixture
def inputs(bert_dir, data_root, tmp_path) -> Inputs:
    run = train_config(bert_dir, data_root / "docs.txt", tmp_path / "cmp" / "r" / "seed-1", task_data=str(data_root / "reviews.csv"),
                       task_text_column="review", max_steps=11, split_seed=42, seed=1)
    return Inputs(run, domain=run.data, picked=tmp_path / "picks.jsonl")


def test_every_recipe_module_is_found():
    assert {"dapt", "tapt", "curated", "dapt+tapt", "lora"} <= set(recipes.available())


def test_dapt_trains_on_the_domain_less_the_task_rows_held_back(inputs):
    [run] = recipes.resolve("dapt").stages(inputs)
    assert run.data == inputs.domain and run.hold_back_task and not run.tapt and run.lora_rank is None
    assert run.tapt_alone()  # the corpus gains none of the task's texts


def test_tapt_trains_on_the_tasks_texts_alone(inputs):
    [run] = recipes.resolve("tapt").stages(inputs)
    assert run.tapt and run.data.data == run.task_data and run.data.text_column == "review" and run.tapt_alone()


def test_curated_adds_the_picks_to_the_tasks_texts(inputs):
    [run] = recipes.resolve("curated").stages(inputs)
    assert run.tapt and run.data.data == str(inputs.picked) and not run.tapt_alone()


def test_dapt_then_tapt_shares_the_steps_and_starts_from_its_first_stage(inputs):
    first, second = recipes.resolve("dapt+tapt").stages(inputs)
    assert first.max_steps + second.max_steps == 11 and (first.max_steps, second.max_steps) == (6, 5)
    assert first.hold_back_task and second.tapt and second.model.model == str(first.output)
    assert first.output == Path(str(inputs.run.output) + "-stage-1") and second.output == inputs.run.output
    assert first.data_seed() == second.data_seed() == 42  # both hold back the same task rows


def test_lora_is_dapt_with_adapters_and_any_recipe_takes_them(inputs):
    [run] = recipes.resolve("lora").stages(inputs)
    assert run.lora_rank == 8 and run.data == inputs.domain
    stages = recipes.resolve("dapt+tapt+lora").stages(inputs)
    assert [s.lora_rank for s in stages] == [8, 8]
    assert recipes.resolve("tapt+lora").name == "tapt+lora"


def test_unknown_and_repeated_recipes_and_missing_inputs_are_refused(inputs):
    with pytest.raises(MlmAdaptError, match="unknown recipe 'lora\\+lora'"):
        recipes.resolve("lora+lora")
    with pytest.raises(MlmAdaptError, match="twice"):
        recipes.parse("dapt, dapt")
    with pytest.raises(MlmAdaptError, match="needs --data and --task-data"):
        recipes.resolve("dapt+tapt").check({"pool"})


def test_steps_split_evenly_and_a_stage_needs_one():
    assert split_steps(7, 2) == [4, 3] and sum(split_steps(1000, 3)) == 1000
    with pytest.raises(MlmAdaptError):
        split_steps(1, 2)


def test_a_domain_run_without_a_task_holds_nothing_back(bert_dir, data_root, tmp_path):
    run = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=4)
    [dapt] = recipes.resolve("dapt").stages(Inputs(run, domain=DataConfig(str(data_root / "docs.txt"))))
    assert not dapt.hold_back_task


def test_train_runs_a_recipes_stages(bert_dir, data_root, tmp_path, capsys):
    import json

    from conftest import run_main

    out = tmp_path / "run"
    common = ["--model", str(bert_dir), "--task-data", str(data_root / "reviews.csv"), "--task-text-column", "review",
              "--max-steps", "3", "--batch-size", "8", "--chunk-size", "48", "--eval-size", "20", "--precision", "fp32",
              "--no-task-probe"]
    status, _, err = run_main(capsys, "train", "--recipe", "dapt+tapt", "--data", str(data_root / "docs.txt"), "--output", str(out),
                              *common)
    assert status == 0, err
    assert json.loads((out / "metrics.json").read_text())["steps"] == 1
    assert json.loads((tmp_path / "run-stage-1" / "metrics.json").read_text())["steps"] == 2
    status, _, err = run_main(capsys, "train", "--recipe", "curated", "--output", str(tmp_path / "c"), *common)
    assert status == 2 and "mlm-adapt compare --recipes curated" in err
    status, _, err = run_main(capsys, "train", "--recipe", "dapt", "--output", str(tmp_path / "d"), *common)
    assert status == 2 and "recipe dapt needs --data" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
