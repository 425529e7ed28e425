"""The comparison's verdicts from score tables: each recipe against the base, pairs, and the
recommendation (largest task gain that holds across seeds, forgetting within the limit)."""

from __future__ import annotations

import numpy as np
import pytest

from mlm_adapt.comparison import verdicts


def tables(rng, accuracy: float, rows: int = 400, ppl: float = 5.0) -> dict:
    correct = (rng.random(rows) < accuracy).astype(float)
    tokens = rng.integers(5, 20, size=50).astype(float)
    return {"accuracy": np.stack([correct, np.ones(rows)], axis=1),
            "macro_f1": np.stack([correct, 1 - correct, 1 - correct, 1 - correct, correct, correct], axis=1) / 2,
            "domain": np.stack([tokens * ppl, tokens], axis=1), "general": np.stack([tokens * ppl, tokens], axis=1)}


def test_a_recipe_that_is_better_on_every_seed_helps_and_its_perplexity_ratio_is_reported():
    rng = np.random.default_rng(0)
    base = tables(rng, 0.6)
    better = {s: {**base, "accuracy": base["accuracy"] + np.array([[0.3, 0.0]] * 400) * (rng.random((400, 1)) < 0.5),
                  "domain": base["domain"] * np.array([0.9, 1.0])} for s in (1, 2, 3)}
    judged = verdicts.against_base(base, better, seed=0)
    assert judged["task"]["verdict"] == "helps" and judged["task"]["ahead"] == 1.0
    assert judged["domain_perplexity"]["ratio"] == pytest.approx(np.exp(-0.1 * 5.0))
    assert judged["domain_perplexity"]["verdict"] == "lower"
    assert [r["seed"] for r in judged["task"]["single_runs"]] == [1, 2, 3]


def test_the_recommendation_takes_the_largest_gain_within_the_forgetting_limit():
    helps = {"task": {"verdict": "helps", "difference": 0.03}, "general_perplexity": {"ratio": 1.30}}
    smaller = {"task": {"verdict": "helps", "difference": 0.01}, "general_perplexity": {"ratio": 1.02}}
    unclear = {"task": {"verdict": "no measurable difference", "difference": 0.05}, "general_perplexity": {"ratio": 1.0}}
    assert verdicts.recommend({"a": helps, "b": smaller, "c": unclear}, None)["recipe"] == "a"
    assert verdicts.recommend({"a": helps, "b": smaller, "c": unclear}, 10.0)["recipe"] == "b"
    none = verdicts.recommend({"c": unclear}, None)
    assert none["recipe"] is None and "none of these helps this task measurably" in none["reason"]
    assert verdicts.recommend({"a": {}}, None)["recipe"] is None


def test_pairs_take_the_later_recipe_minus_the_earlier():
    rng = np.random.default_rng(1)
    by_recipe = {name: {s: tables(rng, acc) for s in (1, 2)} for name, acc in (("dapt", 0.5), ("tapt", 0.9))}
    [pair] = verdicts.pairs(by_recipe, seed=0)
    assert (pair["first"], pair["second"]) == ("dapt", "tapt")
    assert pair["task"]["difference"] > 0.3 and pair["task"]["paired_by_seed"]
