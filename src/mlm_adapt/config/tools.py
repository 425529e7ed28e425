"""Configurations of the commands around a run: ``vocab`` (how a tokenizer splits a
domain's words) and ``probe`` (does a model serve a labelled task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlm_adapt.config.fields import Precision, choice, count, non_negative, positive
from mlm_adapt.config.sources import DataConfig, EvalConfig, MaskingConfig, ModelConfig
from mlm_adapt.errors import MlmAdaptError


@dataclass(frozen=True)
class VocabConfig:
    """A fragmentation report (``mlm-adapt vocab``): the domain's text, and optionally general text."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model whose tokenizer is examined."""
    data: DataConfig = field(default_factory=DataConfig)
    """The domain's text."""
    general: DataConfig | None = None
    """General text to compare with (--general-data)."""
    top: int = 50
    """Words to list."""
    max_documents: int = 100_000
    """Documents read from each corpus at most."""

    def __post_init__(self) -> None:
        count("top", self.top)
        count("max_documents", self.max_documents)


@dataclass(frozen=True)
class ProbeConfig:
    """A downstream probe (``mlm-adapt probe``): models compared on one labelled dataset,
    with out-of-fold predictions from ``folds``-fold cross-validation repeated ``seeds`` times.

    Defaults: 5 folds x 2 repeats for the frozen probe (ten fits of a logistic regression
    per model take seconds; two repeats halve the split's share of the variance), 3 folds x
    1 repeat with ``finetune`` (three fine-tunes per model, as many as the three seeds of
    earlier versions)."""

    models: tuple[ModelConfig, ...] = (ModelConfig(),)
    """The models probed on the same folds (the first, and --compare's)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The labelled data."""
    label_column: str = "label"
    """Column with the labels."""
    seeds: int | None = None
    """Repeats of the k-fold, each shuffled anew (default: 2, 1 with --finetune)."""
    folds: int | None = None
    """Folds: every row is predicted by a model that did not train on it (default: 5, 3 with --finetune)."""
    max_rows: int = 2_000
    """Labelled rows used at most, a seeded sample."""
    max_length: int = 128
    """Tokens of each text the encoder reads."""
    seed: int = 42
    """Seed of the sample and the folds."""
    finetune: bool = False
    """Fine-tune each model with a classification head instead of probing frozen embeddings."""
    finetune_epochs: int = 3
    """Epochs of --finetune."""
    finetune_lr: float = 5e-5
    """Peak learning rate of --finetune."""
    batch_size: int = 16
    """Batch size of --finetune and of the embedding passes."""
    precision: Precision = "auto"
    """Numeric precision of the embedding passes and --finetune."""

    def __post_init__(self) -> None:
        count("seeds", self.seeds, optional=True)
        count("folds", self.folds, optional=True)
        if self.folds is not None and self.folds < 2:
            raise MlmAdaptError(f"--folds must be 2 or more, not {self.folds}")
        count("finetune_epochs", self.finetune_epochs)
        positive("finetune_lr", self.finetune_lr)
        count("batch_size", self.batch_size)
        choice("precision", self.precision, Precision)
        count("max_rows", self.max_rows)
        count("max_length", self.max_length)
        if self.data.streaming:
            raise MlmAdaptError("the probe reads its labelled data in memory; drop --streaming")
        if Path(self.data.data).suffix.lower() in (".txt", ".text") or Path(self.data.data).is_dir():
            raise MlmAdaptError(f"--data {self.data.data}: text files hold no labels; use .csv, .jsonl, .json, .parquet or a Hub dataset")

    def fold_count(self) -> int:
        return self.folds if self.folds is not None else (3 if self.finetune else 5)

    def repeats(self) -> int:
        return self.seeds if self.seeds is not None else (1 if self.finetune else 2)


@dataclass(frozen=True)
class TaskConfig:
    """Labelled task data for a probe: the texts, their labels and where they come from."""

    data: DataConfig
    """The labelled data (csv/jsonl/parquet/Hub)."""
    label_column: str = "label"
    """Column with the labels."""


@dataclass(frozen=True)
class BlendConfig:
    """Blends of a base and an adapted model (``mlm-adapt blend``), measured on the held-out
    documents and masks a ``train`` run with the same data options uses."""

    base: ModelConfig
    """The model the adaptation started from (a = 0)."""
    adapted: ModelConfig
    """The adapted model (a = 1)."""
    data: DataConfig
    """The domain's text: its held-out documents measure every blend."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """The held-out set's masking (as the run's)."""
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """Blend weights a in [0, 1]: (1 - a) * base + a * adapted."""
    general: DataConfig | None = None
    """General-domain text held out to measure forgetting."""
    task: TaskConfig | None = None
    """Labelled task data: each blend gets a frozen-encoder probe."""
    output: Path | None = None
    """Folder for the picked blend (an ordinary model folder, with blend.png and report.html)."""
    pick: float | None = None
    """Save this a (one of --alphas)."""
    max_forgetting: float | None = None
    """Save the largest a whose general-text perplexity rose at most PCT percent over the base's."""
    overwrite: bool = False
    """Write into an output folder that holds files."""
    batch_size: int = 64
    """Chunks per micro-batch."""
    precision: Precision = "auto"
    """Numeric precision of the evaluations."""
    seed: int = 42
    """Seed of the split and the masks: the run's, to measure on its held-out set."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.alphas or any(not 0 <= a <= 1 for a in self.alphas):
            raise MlmAdaptError(f"--alphas must be numbers in [0, 1], not {', '.join(f'{a:g}' for a in self.alphas) or 'none'}")
        if len(set(self.alphas)) != len(self.alphas):
            raise MlmAdaptError("--alphas lists a blend weight twice")
        object.__setattr__(self, "alphas", tuple(sorted(self.alphas)))
        if self.pick is not None and self.pick not in self.alphas:
            raise MlmAdaptError(f"--pick {self.pick:g} is not one of --alphas ({', '.join(f'{a:g}' for a in self.alphas)})")
        if self.max_forgetting is not None:
            if self.general is None:
                raise MlmAdaptError("--max-forgetting compares general-text perplexities: give --general-data")
            if self.pick is not None:
                raise MlmAdaptError("--pick names the blend to save; --max-forgetting picks one: give one of them")
            if 0.0 not in self.alphas:
                raise MlmAdaptError("--max-forgetting measures the rise over the base: --alphas must include 0")
            non_negative("max_forgetting", self.max_forgetting)
        count("batch_size", self.batch_size)
        choice("precision", self.precision, Precision)


@dataclass(frozen=True)
class AssessConfig:
    """Is a corpus worth adapting to (``mlm-adapt assess``)? Measured before a long run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model a run would start from."""
    data: DataConfig = field(default_factory=DataConfig)
    """The domain's text (its held-out documents measure the base model, as a run's would)."""
    general: DataConfig | None = None
    """General-domain text to compare with (--general-data)."""
    max_documents: int = 20_000
    """Documents read at most for the duplicate, length and fertility counts."""
    batch_size: int = EvalConfig.batch_size
    """Chunks per micro-batch: the step that is timed is a run's with this batch."""
    precision: Precision = EvalConfig.precision
    """Numeric precision of the evaluation and the timed step."""
    seed: int = EvalConfig.seed
    """Seed of the split and the masks."""

    def __post_init__(self) -> None:
        count("max_documents", self.max_documents)
        count("batch_size", self.batch_size)
        choice("precision", self.precision, Precision)


@dataclass(frozen=True)
class SelectConfig:
    """Curated task-adaptive data (``mlm-adapt select``): the ``top`` documents of a pool that
    lie nearest a task's texts, written as JSON lines that ``train --data`` reads."""

    pool: DataConfig
    """The documents to choose from (any --data form; --streaming for a pool bigger than memory)."""
    like: DataConfig
    """The task's texts the picked documents should be like."""
    output: Path
    """The .jsonl file of picked documents, one {"text", "score"} a line, nearest first."""
    top: int = 1_000
    """Documents to pick."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model whose mean-pooled embeddings measure nearness (cosine similarity)."""
    max_length: int = 128
    """Tokens of each text the encoder reads."""
    batch_size: int = 32
    """Texts per embedding pass."""
    precision: Precision = "auto"
    """Numeric precision of the embedding passes."""
    overwrite: bool = False
    """Replace an existing --output file."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1:
            raise MlmAdaptError(f"--top must be a positive whole number of documents, not {self.top!r}")
        count("max_length", self.max_length)
        count("batch_size", self.batch_size)
        choice("precision", self.precision, Precision)
        if self.output.suffix.lower() != ".jsonl":
            raise MlmAdaptError(f"--output {self.output}: the picked documents are written as JSON lines; name a .jsonl file")
        if self.output.exists() and not self.overwrite:
            raise MlmAdaptError(f"--output {self.output} exists; pass --overwrite to replace it")
        if self.like.streaming:
            raise MlmAdaptError("--like is read in memory (the task's texts); drop --streaming for it")
