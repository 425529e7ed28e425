"""Recipes: named ways to adapt a base model, each one module that says how it builds its
training runs from the base and the user's data (Gururangan et al., "Don't Stop
Pretraining", ACL 2020, for dapt, tapt, curated and dapt+tapt; Hu et al. 2022 for LoRA).

A recipe module exposes ``RECIPE``, a :class:`Recipe` (``recipe``); this package finds every
such module, so adding a recipe is adding a module (and its tests), never touching the
training loop: a recipe's runs are plain ``train`` configs. ``NAME+lora`` is any recipe
with LoRA adapters in each of its runs (``lora``: dapt with adapters).

May import: every stage below (it builds ``TrainConfig``s; ``comparison`` runs them).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from mlm_adapt.config import DataConfig, TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.recipes.recipe import Inputs, Recipe, with_adapters

__all__ = ["Inputs", "Recipe", "available", "parse", "resolve", "train"]


@lru_cache(maxsize=None)
def available() -> dict[str, Recipe]:
    """Every recipe module's ``RECIPE`` by name."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        recipe = getattr(importlib.import_module(f"{__name__}.{module.name}"), "RECIPE", None)
        if isinstance(recipe, Recipe):
            found[recipe.name] = recipe
    return found


def resolve(name: str) -> Recipe:
    """The recipe called ``name``: a module's, or ``NAME+lora`` (that recipe with adapters)."""
    recipes = available()
    if name in recipes:
        return recipes[name]
    base, _, modifier = name.rpartition("+")
    if modifier == "lora" and base in recipes and base != "lora":
        return with_adapters(recipes[base])
    raise MlmAdaptError(f"unknown recipe {name!r}; known: {', '.join(sorted(recipes))} (and any of them +lora)")


def parse(names: str) -> tuple[Recipe, ...]:
    """Comma-separated recipe names, each once, in the order given."""
    listed = [n.strip() for n in names.split(",") if n.strip()]
    if not listed:
        raise MlmAdaptError("--recipes names no recipe; give e.g. dapt,tapt")
    if len(set(listed)) != len(listed):
        raise MlmAdaptError(f"--recipes lists a recipe twice: {names}")
    return tuple(resolve(n) for n in listed)


def train(name: str, config: TrainConfig, domain: DataConfig | None) -> list[dict]:
    """``train --recipe NAME``: one training seed of a recipe, its stages run in order into
    ``config.output`` (earlier stages beside it); the metrics of each stage. A recipe that
    picks from a pool (curated) needs ``compare``, which runs ``select`` once for every seed."""
    from mlm_adapt.training.loop import train as run

    recipe = resolve(name)
    if "pool" in recipe.needs:
        raise MlmAdaptError(f"recipe {name} picks documents from a pool: run `mlm-adapt compare --recipes {name} --pool P`, "
                            "or pick them with `mlm-adapt select` and train on them with --tapt --data picked.jsonl")
    recipe.check({flag for flag, given in (("data", domain), ("task", config.task_data)) if given})
    return [run(stage) for stage in recipe.stages(Inputs(config, domain))]
