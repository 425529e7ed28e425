"""DAPT then TAPT (the best of "Don't Stop Pretraining"): half the steps on the domain corpus,
then the other half on the task's texts, starting from the first stage's model. Both
stages count against --max-steps, so every recipe gets the same number of steps."""

import dataclasses

from mlm_adapt.recipes.recipe import Inputs, Recipe, split_steps, stage_folder


def stages(inputs: Inputs):
    first_steps, second_steps = split_steps(inputs.run.max_steps, 2)
    first = inputs.dapt(max_steps=first_steps, output=stage_folder(inputs.run, 1))
    start = dataclasses.replace(inputs.run.model, model=str(first.output))
    return [first, inputs.tapt(max_steps=second_steps, model=start)]


RECIPE = Recipe("dapt+tapt", "the domain corpus, then the task's texts (half the steps each)", frozenset({"data", "task"}),
                stages)
