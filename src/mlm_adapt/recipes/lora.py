"""LoRA: DAPT with low-rank adapters (--lora-rank, default 8) instead of every weight; any
other recipe takes adapters as ``NAME+lora``."""

from mlm_adapt.recipes import dapt
from mlm_adapt.recipes.recipe import Recipe, with_adapters

RECIPE = Recipe("lora", with_adapters(dapt.RECIPE).describe, dapt.RECIPE.needs, with_adapters(dapt.RECIPE).stages, lora=True)
