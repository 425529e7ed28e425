"""DAPT, domain-adaptive pretraining: masked-LM training on the domain corpus (--data). The
task's held-back rows are kept out of it, so its probe tests the rows every recipe's does."""

from mlm_adapt.recipes.recipe import Inputs, Recipe


def stages(inputs: Inputs):
    return [inputs.dapt()]


RECIPE = Recipe("dapt", "the domain corpus (--data)", frozenset({"data"}), stages)
