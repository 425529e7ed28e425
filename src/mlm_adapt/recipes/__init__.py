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

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.recipes.recipe import Inputs, Recipe, with_adapters

__all__ = ["Inputs", "Recipe", "available", "parse", "resolve"]


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
