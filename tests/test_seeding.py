"""The registry of random streams: no two of a run's generators can coincide."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_adapt.data.seeding import Salt, generator

SRC = Path(__file__).resolve().parents[1] / "src" / "mlm_adapt"


def test_salts_are_distinct():
    values = [salt.value for salt in Salt]
    assert len(values) == len(set(values)) >= 10


def test_every_generator_in_the_package_comes_from_the_registry():
    # A generator seeded anywhere else (default_rng([seed, 2]) once served both the eval
    # row choice and the eval masks) could collide with one of the registry's.
    offenders = [f"{path.name}:{n}" for path in SRC.glob("*.py") if path.name != "seeding.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"default_rng\(|RandomState\(", line)]
    assert offenders == []


def test_a_trailing_zero_index_is_a_different_stream():
    # numpy pads seed words with zeros: without the index count, step 0's masks of an epoch
    # were drawn from the very generator that shuffled the epoch.
    assert generator(7, Salt.TRAIN_MASKS).random() != generator(7, Salt.TRAIN_MASKS, 0).random()
    assert generator(7, Salt.TRAIN_MASKS, 3).random() != generator(7, Salt.TRAIN_MASKS, 3, 0).random()


@given(seed=st.integers(0, 2**32 - 1), a=st.sampled_from(list(Salt)), b=st.sampled_from(list(Salt)),
       i=st.lists(st.integers(0, 50), max_size=3), j=st.lists(st.integers(0, 50), max_size=3))
@settings(max_examples=200, deadline=None)
def test_different_coordinates_give_different_draws(seed, a, b, i, j):
    first, second = generator(seed, a, *i).random(4), generator(seed, b, *j).random(4)
    assert np.array_equal(first, second) == (a == b and i == j)


def test_hypothesis_draws_fixed_examples_in_ci():
    import os

    assert settings().derandomize == bool(os.environ.get("CI"))


def test_each_call_site_draws_its_own_stream(bert_dir, data_root, tmp_path, monkeypatch):
    """The streams the package really draws, recorded at their call sites during real runs:
    distinct salt values mean nothing if two call sites pass the same one (the evaluation
    masks were once drawn with the evaluation-rows salt)."""
    import sys

    from conftest import train_config
    from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig
    from mlm_adapt.evaluation import probing
    from mlm_adapt.training.loop import train

    drawn: set[tuple[str, Salt]] = set()

    def recording(seed, salt, *indices):
        drawn.add((sys._getframe(1).f_code.co_name, Salt(salt)))
        return generator(seed, salt, *indices)

    import mlm_adapt.data.batching  # noqa: E401,F401
    import mlm_adapt.data.chunk_stream
    import mlm_adapt.data.splits
    import mlm_adapt.evaluation.finetuning  # noqa: E401,F401
    for name, module in list(sys.modules.items()):
        if name.startswith("mlm_adapt.") and name != "mlm_adapt.data.seeding" and getattr(module, "generator", None) is generator:
            monkeypatch.setattr(module, "generator", recording)
    reviews = str(data_root / "reviews.csv")
    train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "a", max_steps=2, train_size=60, eval_size=20,
                       general_data=reviews, general_text_column="review", replay_ratio=0.2,
                       task_data=reviews, task_text_column="review"))
    train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "b", max_steps=2, streaming=True, eval_size=20))
    probing.probe(ProbeConfig(models=(ModelConfig(str(bert_dir)),), data=DataConfig(reviews, text_column="review"),
                              max_rows=60, seeds=1, finetune=True, finetune_epochs=1))
    expected = {
        ("split_documents", Salt.SPLIT), ("choose_rows", Salt.TRAIN_ROWS), ("choose_rows", Salt.EVAL_ROWS),
        ("in_memory_batches", Salt.TRAIN_ORDER), ("in_memory_batches", Salt.TRAIN_MASKS),
        ("mask_eval_set", Salt.EVAL_MASKS), ("training_batches", Salt.STREAM_SHUFFLE), ("streamed_batches", Salt.STREAM_MASKS),
        ("default_probes", Salt.PROBES), ("perplexity_interval", Salt.BOOTSTRAP), ("sample", Salt.PROBE_ROWS),
        ("fold_splits", Salt.PROBE_SPLIT), ("finetune_predict", Salt.FINETUNE_ORDER),
        ("with_replay", Salt.REPLAY_ROWS),
    }
    assert drawn == expected
    every_salt = {salt for salt in Salt if salt is not Salt.STREAM_HELD_OUT}  # that one seeds a hash, not a generator
    assert {salt for _, salt in drawn} == every_salt
