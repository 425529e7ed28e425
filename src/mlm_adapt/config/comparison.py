"""``mlm-adapt compare``'s configuration: recipes x training seeds, every run built from the
same ``train`` options, measured on one shared split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mlm_adapt.config.fields import count, non_negative
from mlm_adapt.config.sources import DataConfig
from mlm_adapt.config.training import TrainConfig
from mlm_adapt.errors import MlmAdaptError

DEFAULT_RECIPES = ("dapt", "tapt")


@dataclass(frozen=True)
class CompareConfig:
    """Recipes x seeds. ``run`` holds the options every run shares (its ``output`` is the
    comparison's folder, ``seed`` unused: the training seeds are 1..``seeds``)."""

    run: TrainConfig
    """The train options of every run: the base (--model), --task-data, --max-steps, ..."""
    domain: DataConfig | None = None
    """The domain corpus (--data): DAPT's, and the held-out documents every model's domain
    perplexity is measured on (without it, the task's texts less its held-back rows)."""
    recipes: tuple[str, ...] = DEFAULT_RECIPES
    """Recipes to compare, comma-separated: dapt, tapt, curated, dapt+tapt, lora, or NAME+lora."""
    seeds: int = 3
    """Training seeds per recipe (1..N): the Multi-Bootstrap resamples them with the task's rows."""
    pool: DataConfig | None = None
    """Documents curated TAPT picks from (`mlm-adapt select`'s --pool)."""
    top: int = 1_000
    """Documents of --pool curated TAPT adds to the task's texts."""
    max_forgetting: float | None = None
    """Recommend only a recipe whose general-text perplexity rose at most PCT percent (needs --general-data)."""
    finetune: bool = False
    """Fine-tune a classifier per model instead of the frozen probe (slower, noisier)."""
    max_rows: int = 2_000
    """Labelled rows the probe uses at most (a seeded sample, drawn by the split seed)."""
    plan: bool = False
    """Write each run's config and print the `mlm-adapt train` commands (one job per run folder) instead of training."""

    def __post_init__(self) -> None:
        count("seeds", self.seeds)
        count("top", self.top)
        count("max_rows", self.max_rows)
        if not self.recipes:
            raise MlmAdaptError("--recipes names no recipe; give e.g. dapt,tapt")
        if self.run.max_steps is None:
            raise MlmAdaptError("compare trains every recipe for the same number of steps: give --max-steps")
        if self.run.data.streaming:
            raise MlmAdaptError("compare holds the task's held-back rows out of every corpus read in memory: drop --streaming")
        if self.run.extends_vocabulary():
            raise MlmAdaptError("compare scores every run on the same tokens: drop --add-tokens/--add-tokens-file")
        if self.max_forgetting is not None:
            non_negative("max_forgetting", self.max_forgetting)
            if self.run.general_data is None:
                raise MlmAdaptError("--max-forgetting limits the rise of general-text perplexity: give --general-data")
        if self.pool is not None and self.pool.streaming:
            raise MlmAdaptError("--pool is read in memory here; pick with `mlm-adapt select --streaming` and pass --data")

    @property
    def folder(self) -> Path:
        return self.run.output

    def training_seeds(self) -> tuple[int, ...]:
        return tuple(range(1, self.seeds + 1))

    def split_seed(self) -> int:
        return self.run.data_seed()

    def run_for(self, recipe: str, seed: int, lora: bool) -> TrainConfig:
        """The shared options as recipe ``recipe``'s run of training seed ``seed`` writes them:
        its folder ``DIR/<recipe>/seed-<k>``, the split seed fixed, no probe of its own (the
        comparison measures every run together), LoRA options only for a LoRA recipe."""
        lora_options = {} if lora else {"lora_rank": None, "lora_alpha": None, "lora_targets": None, "lora_train_head": False}
        steps = self.run.max_steps
        return dataclasses.replace(
            self.run, output=self.folder / recipe / f"seed-{seed}", seed=seed, split_seed=self.split_seed(),
            task_probe=False, resume=False, overwrite=False, push_to_hub=None, max_forgetting=None, early_stop=None,
            select="last", save_steps=self.run.save_steps or max(1, steps // 4), keep_checkpoints=1, **lora_options)
