"""Typed, validated configuration: defaults, refused values, derived counts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlm_adapt.config import DataConfig, MaskingConfig, ProbeConfig, TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.flat_options import from_options


def test_defaults_are_the_seeds():
    c = TrainConfig()
    assert (c.model.model, c.data.data, c.data.chunk_size) == ("distilbert-base-uncased", "imdb", 128)
    assert (c.data.train_size, c.data.eval_size, c.batch_size, c.lr, c.weight_decay, c.epochs) == (10_000, 1_000, 64, 2e-5, 0.01, 3)
    assert c.masking.train_mask_prob() == 0.15
    assert MaskingConfig(masking="whole-word").train_mask_prob() == 0.2
    assert MaskingConfig(masking="whole-word").eval_masking == "token"


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"mask_prob": 0.0}, "--mask-prob"),
        ({"mask_prob": 1.0}, "--mask-prob"),
        ({"eval_mask_prob": 1.5}, "--eval-mask-prob"),
        ({"chunk_size": 0}, "--chunk-size"),
        ({"train_size": -1}, "--train-size"),
        ({"eval_size": 0}, "--eval-size"),
        ({"batch_size": 0}, "--batch-size"),
        ({"max_steps": 0}, "--max-steps"),
        ({"epochs": -2}, "--epochs"),
        ({"grad_accum": 0}, "--grad-accum"),
        ({"lr": 0}, "--lr"),
        ({"warmup_ratio": 1.0}, "--warmup-ratio"),
        ({"masking": "span"}, "--masking"),
        ({"remainder": "keep"}, "--remainder"),
        ({"precision": "fp8"}, "--precision"),
        ({"text_column": "answers..text"}, "--text-column"),
        ({"num_workers": -1}, "--num-workers"),
        ({"num_workers": 1.5}, "--num-workers"),
        ({"chunk_size": 100.5}, "--chunk-size must be a positive number, a whole one"),
        ({"epochs": 1.5}, "--epochs"),
        ({"max_steps": 2.0}, "--max-steps"),
        ({"batch_size": True}, "--batch-size"),
        ({"add_tokens": 0.5}, "--add-tokens"),
        ({"replay_ratio": 0.0, "general_data": "news.txt"}, "--replay-ratio"),
        ({"replay_ratio": 1.0, "general_data": "news.txt"}, "--replay-ratio"),
        ({"replay_ratio": 0.2}, "--replay-ratio mixes chunks of --general-data"),
        ({"replay_ratio": 0.2, "general_data": "news.txt", "streaming": True, "max_steps": 5}, "without --streaming"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(options, flag):
    with pytest.raises(MlmAdaptError, match=flag):
        from_options(TrainConfig, options)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        TrainConfig().lr = 1.0  # type: ignore[misc]


def test_derived_step_counts():
    c = TrainConfig(batch_size=8, grad_accum=2, epochs=3, warmup_ratio=0.1)
    assert c.steps_per_epoch(100) == 7  # ceil(100 / 16)
    assert c.total_steps(c.steps_per_epoch(100)) == 21
    assert c.warmup_steps(c.total_steps(c.steps_per_epoch(100))) == 3
    assert TrainConfig(max_steps=5).total_steps(10_000) == 5
    assert c.steps_per_epoch(100, world_size=2) == 4
    # A last partial batch too small to give each of the micro-batches (x processes) a chunk is dropped.
    assert c.steps_per_epoch(98, world_size=2) == 3
    assert c.steps_per_epoch(97) == 6
    assert TrainConfig(batch_size=8).steps_per_epoch(17) == 3


def test_output_is_a_path():
    assert isinstance(TrainConfig(output="x").output, Path)
    assert DataConfig(data="x.txt").data == "x.txt"


def test_whole_numbers_of_any_integer_type_are_counts():
    import numpy as np

    config = from_options(TrainConfig, {"chunk_size": np.int64(64), "epochs": np.int32(2)})
    assert config.data.chunk_size == 64 and config.epochs == 2
    with pytest.raises(MlmAdaptError, match="--seeds"):
        ProbeConfig(seeds=2.5)
