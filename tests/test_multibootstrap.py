"""The Multi-Bootstrap on synthetic scores whose answer is known: no effect, a seed effect
only, a row effect only; and its bookkeeping (pairing by seed, the share ahead)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import t

from mlm_adapt.evaluation.multibootstrap import (
    SeedTables,
    accuracy,
    group_sums,
    log_perplexity,
    macro_f1,
    multibootstrap,
    small_sample_scale,
)

Z = 1.96


def scores(values: np.ndarray) -> SeedTables:
    """[seeds, rows] scores in [0, 1] as (correct, rows) tables, one group per row."""
    values = np.atleast_2d(values)
    return SeedTables(tuple(range(len(values))), np.stack([values, np.ones_like(values)], axis=-1))


def width(result: dict) -> float:
    return result["interval"][1] - result["interval"][0]


def test_with_no_seed_effect_the_interval_is_the_rows_noise():
    rng = np.random.default_rng(0)
    rows = 2000
    truth = rng.random(rows) < 0.7  # the base's correctness per row
    base = scores(truth.astype(float))
    # Five seeds that all make the same predictions: the seed adds nothing, rows differ at random.
    same = rng.random(rows) < 0.5
    recipe = scores(np.tile(np.where(same, truth, ~truth).astype(float), (5, 1)))
    result = multibootstrap(base, recipe, accuracy)
    d = recipe.tables[0, :, 0] - truth
    expected = 2 * Z * d.std() / np.sqrt(rows)
    assert width(result) == pytest.approx(expected, rel=0.15)
    assert result["interval"][0] < result["difference"] < result["interval"][1]


def test_a_seed_effect_widens_the_interval_far_beyond_one_runs():
    rng = np.random.default_rng(1)
    rows, seeds, spread = 2000, 8, 0.03
    base = scores(np.full(rows, 0.7))
    offsets = rng.normal(0, spread, seeds)
    recipe = scores(0.7 + offsets[:, None] + np.zeros((seeds, rows)))  # each seed shifts every row alike
    plain = multibootstrap(base, recipe, accuracy, small_sample=False)
    one_run = multibootstrap(base, SeedTables((0,), recipe.tables[:1]), accuracy)
    assert width(one_run) < 1e-9  # rows alone see no noise here
    # The plain bootstrap of a mean of n seeds has sd ~ sd(seeds) * sqrt((n - 1) / n) / sqrt(n) ...
    assert width(plain) == pytest.approx(2 * Z * offsets.std(ddof=0) / np.sqrt(seeds), rel=0.25)
    assert plain["difference"] == pytest.approx(offsets.mean())
    # ... and the small-sample one Student's t width, s / sqrt(n) * t(n - 1).
    result = multibootstrap(base, recipe, accuracy)
    assert width(result) == pytest.approx(2 * t.ppf(0.975, seeds - 1) * offsets.std(ddof=1) / np.sqrt(seeds), rel=0.25)
    assert width(result) > width(plain)


def test_the_small_sample_scale_is_students_t_over_z():
    assert small_sample_scale(1, 0.95) == 1.0
    assert small_sample_scale(3, 0.95) == pytest.approx(t.ppf(0.975, 2) / Z * np.sqrt(1.5), rel=1e-3)
    assert small_sample_scale(1000, 0.95) == pytest.approx(1.0, abs=0.01)


def test_a_row_effect_with_no_seed_spread_is_found_and_every_seed_is_ahead():
    rng = np.random.default_rng(2)
    rows = 1500
    truth = (rng.random(rows) < 0.6).astype(float)
    better = np.maximum(truth, (rng.random(rows) < 0.15))  # fixes 15% of the rows, breaks none
    result = multibootstrap(scores(truth), scores(np.tile(better, (3, 1))), accuracy)
    assert result["holds"] and result["interval"][0] > 0
    assert result["ahead"] == 1.0 and result["per_seed"] == pytest.approx([better.mean() - truth.mean()] * 3)


def test_recipes_that_share_seeds_are_paired_by_seed():
    rng = np.random.default_rng(3)
    rows, seeds = 500, 4
    shared = rng.normal(0, 0.05, seeds)[:, None]  # a seed effect both recipes share (same order, same masks)
    a = scores(np.clip(0.6 + shared + rng.normal(0, 0.01, (seeds, rows)), 0, 1))
    b = scores(np.clip(0.62 + shared + rng.normal(0, 0.01, (seeds, rows)), 0, 1))
    paired = multibootstrap(a, b, accuracy)
    unpaired = multibootstrap(a, SeedTables(tuple(range(10, 10 + seeds)), b.tables), accuracy)
    assert paired["paired_by_seed"] and not unpaired["paired_by_seed"]
    assert width(paired) < width(unpaired) / 3  # pairing cancels the shared seed effect
    assert paired["holds"] and len(paired["per_seed"]) == seeds


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), shift=st.floats(-0.2, 0.2))
def test_shifting_every_score_shifts_the_difference_and_its_interval(seed, shift):
    rng = np.random.default_rng(seed)
    base = scores(rng.random(200) * 0.5)
    recipe = scores(rng.random((3, 200)) * 0.5)
    moved = scores(recipe.tables[..., 0] + shift)
    a, b = multibootstrap(base, recipe, accuracy, seed=seed), multibootstrap(base, moved, accuracy, seed=seed)
    assert b["difference"] == pytest.approx(a["difference"] + shift)
    assert np.allclose(b["interval"], np.array(a["interval"]) + shift)


def test_statistics_read_their_columns():
    assert accuracy(np.array([3.0, 4.0])) == 0.75
    assert log_perplexity(np.array([[np.log(10) * 5, 5.0]]))[0] == pytest.approx(np.log(10))
    # Two classes: class 0 tp=2 fp=1 fn=0 -> 0.8; class 1 tp=1 fp=0 fn=1 -> 2/3.
    assert macro_f1(np.array([2.0, 1.0, 0.0, 1.0, 0.0, 1.0])) == pytest.approx((0.8 + 2 / 3) / 2)
    sums = group_sums(np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]), np.array([5, 2, 5]))
    assert sums.tolist() == [[0.0, 1.0], [2.0, 2.0]]


def test_tables_must_have_one_table_per_seed():
    with pytest.raises(ValueError):
        SeedTables((1, 2), np.zeros((3, 4, 2)))
    with pytest.raises(ValueError):
        multibootstrap(scores(np.zeros(4)), scores(np.zeros(5)), accuracy)
