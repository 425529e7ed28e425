"""Which chunks each step trains on, masked, and how they are shared among processes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import FrameTokenizer, synthetic_tokens
from mlm_adapt.config import DataConfig, TrainConfig
from mlm_adapt.data.batching import in_memory_batches
from mlm_adapt.data.chunking import Chunks, chunk_documents
from mlm_adapt.data.masking import MaskingVocab

VOCAB = MaskingVocab(mask_token_id=3, replacement_ids=np.arange(10, 1000))


@dataclass
class FakeAccelerator:
    num_processes: int = 1
    process_index: int = 0


def _data(rows: int) -> Chunks:
    tokens = synthetic_tokens([40] * rows, seed=1)
    return chunk_documents(tokens, np.arange(rows), 20, FrameTokenizer, "drop")


def _steps(data: Chunks, config: TrainConfig, accelerator, start: int, count: int) -> list:
    return list(itertools.islice(in_memory_batches(data, config, VOCAB, accelerator, start), count))


def _rows(micro_batches) -> np.ndarray:
    """The step's (inputs, attention, labels) rows side by side, in micro-batch order."""
    return np.concatenate([np.concatenate(m, axis=1) for m in micro_batches])


@pytest.mark.parametrize("world, grad_accum, scheme", [(2, 1, "token"), (2, 2, "whole-word"), (3, 2, "token")])
def test_processes_share_exactly_the_single_process_batch(world, grad_accum, scheme):
    from mlm_adapt.config import MaskingConfig

    data = _data(90)
    per_process = 4
    masking = MaskingConfig(masking=scheme)
    single = TrainConfig(data=DataConfig("x"), masking=masking, batch_size=per_process * world, grad_accum=grad_accum, seed=3)
    shared = TrainConfig(data=DataConfig("x"), masking=masking, batch_size=per_process, grad_accum=grad_accum, seed=3)
    steps = single.steps_per_epoch(len(data)) * 2 + 1  # across two epoch boundaries
    assert shared.steps_per_epoch(len(data), world) == single.steps_per_epoch(len(data))
    alone = _steps(data, single, FakeAccelerator(), 0, steps)
    ranks = [_steps(data, shared, FakeAccelerator(world, rank), 0, steps) for rank in range(world)]
    for step in range(steps):
        together = np.concatenate([_rows(ranks[rank][step]) for rank in range(world)])
        expected = _rows(alone[step])
        # Same rows, same masks: only their order among processes may differ.
        assert sorted(map(bytes, together)) == sorted(map(bytes, expected)), step
        assert all(len(ranks[rank][step]) == grad_accum for rank in range(world))


def test_a_step_started_late_is_the_step_of_a_run_from_zero():
    data = _data(50)
    config = TrainConfig(data=DataConfig("x"), batch_size=8, seed=5)
    from_zero = _steps(data, config, FakeAccelerator(), 0, 12)
    for start in (1, 6, 7, 11):  # within an epoch and on its boundaries (6 steps an epoch)
        late = _steps(data, config, FakeAccelerator(), start, 12 - start)
        for a, b in zip(from_zero[start:], late):
            assert all((x == y).all() for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def test_each_epoch_trains_on_every_chunk_once_in_a_new_order():
    data = _data(40)
    config = TrainConfig(data=DataConfig("x"), batch_size=8, seed=5)
    per_epoch = config.steps_per_epoch(len(data))
    orders = []
    for epoch in range(2):
        micro = [m for step in _steps(data, config, FakeAccelerator(), epoch * per_epoch, per_epoch) for m in step]
        inputs, labels = np.concatenate([m[0] for m in micro]), np.concatenate([m[2] for m in micro])
        original = np.where(labels != -100, labels, inputs)  # undo the masks
        assert sorted(map(bytes, original)) == sorted(map(bytes, data.input_ids))
        orders.append([bytes(row) for row in original])
    assert orders[0] != orders[1]


def test_in_memory_batches_are_prefetched_on_an_accelerator_only(data_root, bert_dir):
    """The same batches either way; on a GPU a background thread masks them ahead."""
    import itertools
    import threading

    import numpy as np
    import torch

    from conftest import train_config
    from mlm_adapt.modeling.preparation import prepare

    config = train_config(bert_dir, data_root / "docs.txt", "unused", train_size=64)
    prepared = prepare(config)

    class Device:
        def __init__(self, kind):
            self.device, self.num_processes, self.process_index = torch.device(kind), 1, 0

    runs = {}
    for kind in ("cpu", "cuda"):
        before = {t.name for t in threading.enumerate()}
        batches = prepared.data.train.batches(config, prepared.vocab, Device(kind), 0)
        runs[kind] = list(itertools.islice(batches, 5))
        started = {t.name for t in threading.enumerate()} - before
        assert ("mlm-adapt-stream" in started) == (kind == "cuda")
        batches.close()
    for cpu, gpu in zip(*runs.values()):
        for a, b in zip(cpu, gpu):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
