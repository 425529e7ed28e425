"""TAPT, task-adaptive pretraining: masked-LM training on the task's own texts (--task-data),
less its held-back rows (--task-test-share), which the probe tests."""

from mlm_adapt.recipes.recipe import Inputs, Recipe


def stages(inputs: Inputs):
    return [inputs.tapt()]


RECIPE = Recipe("tapt", "the task's texts (--task-data, less its held-back rows)", frozenset({"task"}), stages)
