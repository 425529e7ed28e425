"""What a recipe is: a name, what it needs from the user, and how it turns the options every
run shares into its training runs (one or more stages, each a plain ``TrainConfig``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlm_adapt.config import DataConfig, TrainConfig
from mlm_adapt.errors import MlmAdaptError

# LoRA's rank where the user gave none: the usual small rank (Hu et al. 2022 found 4-8 enough).
DEFAULT_LORA_RANK = 8


@dataclass(frozen=True)
class Inputs:
    """What a recipe builds its runs from. ``run``: the options every run shares (the base
    model, the task in ``task_data``, ``max_steps``, the split and training seeds, the output
    folder of the run); ``domain``: the domain corpus (--data) or None; ``picked``: curated
    documents (``select``'s output) or None."""

    run: TrainConfig
    domain: DataConfig | None = None
    picked: Path | None = None

    def task_texts(self) -> DataConfig:
        """The labelled task read as a corpus of its texts (TAPT's corpus)."""
        run = self.run
        return dataclasses.replace(run.data, data=run.task_data, split=run.task_split,
                                   text_column=run.task_text_column or run.data.text_column)

    def dapt(self, **changes) -> TrainConfig:
        """A run on the domain corpus that keeps the task's held-back rows (if there is a task) out of it."""
        return dataclasses.replace(self.run, data=self.domain, tapt=False, hold_back_task=self.run.task_data is not None,
                                   **changes)

    def tapt(self, data: DataConfig | None = None, **changes) -> TrainConfig:
        """A TAPT run: the task's texts (less its held-back rows), added to ``data`` if given."""
        return dataclasses.replace(self.run, data=data or self.task_texts(), tapt=True, hold_back_task=False, **changes)


@dataclass(frozen=True)
class Recipe:
    """A named recipe. ``needs``: the inputs it cannot run without, of "data" (--data), "task"
    (--task-data) and "pool" (--pool, for ``select``); ``stages(inputs)``: its runs in order,
    the last one's output being ``inputs.run.output`` (the run folder), each later stage
    starting from the one before."""

    name: str
    describe: str
    needs: frozenset[str]
    stages: Callable[[Inputs], list[TrainConfig]]
    lora: bool = False

    def check(self, have: set[str]) -> None:
        """Refuse a recipe whose inputs are missing, naming the options to give."""
        flags = {"data": "--data", "task": "--task-data", "pool": "--pool"}
        missing = sorted(self.needs - have)
        if missing:
            raise MlmAdaptError(f"recipe {self.name} needs {' and '.join(flags[m] for m in missing)}")


def stage_folder(run: TrainConfig, stage: int) -> Path:
    """Where stage ``stage`` (1-based) of a several-stage run writes: beside the run folder."""
    return run.output.with_name(f"{run.output.name}-stage-{stage}")


def split_steps(total: int, parts: int) -> list[int]:
    """``total`` steps shared by ``parts`` stages as evenly as whole steps allow, earlier first."""
    if total < parts:
        raise MlmAdaptError(f"--max-steps {total} is too few for a recipe of {parts} stages")
    return [total // parts + (i < total % parts) for i in range(parts)]


def with_adapters(recipe: Recipe) -> Recipe:
    """``recipe`` with LoRA adapters in each of its runs (--lora-rank, else DEFAULT_LORA_RANK)."""
    def stages(inputs: Inputs) -> list[TrainConfig]:
        rank = inputs.run.lora_rank or DEFAULT_LORA_RANK
        return [dataclasses.replace(stage, lora_rank=rank) for stage in recipe.stages(inputs)]

    return Recipe(f"{recipe.name}+lora", f"{recipe.describe}, with LoRA adapters", recipe.needs, stages, lora=True)
