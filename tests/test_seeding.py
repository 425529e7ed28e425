"""The registry of random streams: no two of a run's generators can coincide."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_adapt.seeding import Salt, generator

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
