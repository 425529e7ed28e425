"""Two seeds, two jobs: --split-seed draws what runs compared must share (held-out documents,
their masks, a task's held-back rows, the probe's rows and folds), --seed what a rerun
changes (training order and masks, dropout, new weights). Without --split-seed, --seed does
both, as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import labelled_csv, make_documents, train_config
from mlm_adapt.config import TrainConfig
from mlm_adapt.data import task_adaptive
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.modeling.preparation import prepare


class _OneProcess:
    num_processes, process_index = 1, 0
    device = type("Device", (), {"type": "cpu"})()


def _prepare(config: TrainConfig):
    """What the training loop prepares for ``config`` (its task texts and general text too)."""
    return prepare(config, general=config.general_data_config(), task=task_adaptive.for_run(config))


def _first_batches(prepared, config: TrainConfig, steps: int = 3) -> list[np.ndarray]:
    batches = prepared.data.train.batches(config, prepared.vocab, _OneProcess(), 0)
    return [next(batches)[0][0] for _ in range(steps)]


@pytest.fixture(scope="module")
def configs(bert_dir, data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split-seed")
    general = tmp / "general.txt"
    general.write_text("\n".join(make_documents(120, seed=5)) + "\n", encoding="utf-8")
    task = labelled_csv(tmp / "task.csv", make_documents(80, seed=9), ["pos", "neg"] * 40)
    base = train_config(bert_dir, data_root / "docs.txt", tmp / "out", general_data=str(general), task_data=str(task),
                        tapt=True, split_seed=11, seed=1)
    return base, dataclasses.replace(base, seed=2)


def test_the_split_stays_fixed_while_the_training_seed_changes(configs):
    first, second = configs
    a, b = (_prepare(c) for c in (first, second))
    # What a comparison shares: held-out documents and chunks, their masks, the general text's.
    assert np.array_equal(a.data.held_out, b.data.held_out)
    assert np.array_equal(a.eval_set.input_ids, b.eval_set.input_ids)
    assert np.array_equal(a.eval_set.labels, b.eval_set.labels)
    assert np.array_equal(a.general_set.labels, b.general_set.labels)
    assert np.array_equal(a.general_held_out, b.general_held_out)
    # ... the task's held-back rows, and the probe's rows and folds (its seed).
    assert np.array_equal(a.task.held, b.task.held)
    assert first.task_probe_config().seed == second.task_probe_config().seed == 11
    # What a rerun changes: the training order and masks.
    assert not all(np.array_equal(x, y) for x, y in zip(_first_batches(a, first), _first_batches(b, second)))


def test_the_split_seed_moves_the_split_and_seed_alone_moves_both(configs):
    first, _ = configs
    moved = dataclasses.replace(first, split_seed=12)
    a, other_split = (_prepare(c) for c in (first, moved))
    assert not np.array_equal(a.data.held_out, other_split.data.held_out)
    assert not np.array_equal(a.task.held, other_split.task.held)
    # Same training seed: the first step trains the same way up to which chunks exist.
    old_style = dataclasses.replace(first, split_seed=None, seed=11)  # --seed 11 alone: the split of split seed 11
    assert old_style.data_seed() == 11
    assert np.array_equal(_prepare(old_style).data.held_out, a.data.held_out)


def test_the_task_draw_follows_the_split_seed():
    texts = [f"text {i}" for i in range(500)]
    held = task_adaptive.held_back(texts, 0.3, 11)
    assert (held == task_adaptive.held_back(texts, 0.3, 11)).all() and (held != task_adaptive.held_back(texts, 0.3, 12)).any()


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_a_split_seed_must_be_a_non_negative_integer(bert_dir, data_root, tmp_path, value):
    with pytest.raises(MlmAdaptError, match="--split-seed"):
        train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", split_seed=value)
