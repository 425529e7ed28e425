"""Curated TAPT: the task's texts plus the --top documents of --pool nearest them
(``select``, computed once for every seed), as Gururangan et al. (2020, section 5) built it."""

from mlm_adapt.config import DataConfig
from mlm_adapt.recipes.recipe import Inputs, Recipe


def stages(inputs: Inputs):
    picked = DataConfig(str(inputs.picked), chunk_size=inputs.run.data.chunk_size, train_size=inputs.run.data.train_size,
                        eval_size=inputs.run.data.eval_size, encoding=inputs.run.data.encoding)
    return [inputs.tapt(picked)]


RECIPE = Recipe("curated", "the task's texts plus select's nearest --top documents of --pool", frozenset({"task", "pool"}),
                stages)
