"""Typed, validated run configuration.

Every dataclass here is frozen and checks its own values at construction, so a
bad option fails before any model or data is loaded. Values that follow from
others (the mask rate a masking scheme defaults to, the number of optimizer
steps) are methods, never fields written later.

Their flat form (YAML files, the command line, ``OUTPUT/config.yaml``) is in
``options``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


from mlm_adapt.errors import MlmAdaptError

Masking = Literal["token", "whole-word"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Remainder = Literal["drop", "pad"]
DocumentBoundary = Literal["line", "blank-line", "file"]
ReportTo = Literal["none", "tensorboard", "wandb", "mlflow", "trackio"]

# The seeds' rates: 15% of tokens as in BERT; 20% of words for whole-word masking
# as in the Hugging Face course's whole_word_masking_data_collator.
DEFAULT_MASK_PROB = {"token": 0.15, "whole-word": 0.2}
DEFAULT_TRAIN_SIZE = 10_000


def choices(literal) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` option type: the one list validation and help share."""
    return typing.get_args(literal)


def _choice(name: str, value: str, literal) -> None:
    allowed = choices(literal)
    if value not in allowed:
        raise MlmAdaptError(f"--{_flag(name)} must be one of {', '.join(allowed)}, not {value!r}")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise MlmAdaptError(f"--{_flag(name)} must be a positive number, not {value!r}")


def _count(name: str, value: int | None, *, optional: bool = False) -> None:
    """A positive whole number (sizes, steps, counts): ``chunk_size: 100.5`` in a YAML file
    is refused here, not deep in the chunking arithmetic."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MlmAdaptError(f"--{_flag(name)} must be a positive number, a whole one, not {value!r}")


def _probability(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise MlmAdaptError(f"--{_flag(name)} must be a probability strictly between 0 and 1, not {value!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained masked LM to start from and how far to trust its files."""

    model: str = "distilbert-base-uncased"
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise MlmAdaptError("--model must name a Hub model id or a local directory")
        if str(self.model).startswith("~"):
            object.__setattr__(self, "model", str(Path(self.model).expanduser()))


@dataclass(frozen=True)
class DataConfig:
    """Where the domain text comes from and how it becomes fixed-length chunks."""

    data: str = "imdb"
    split: str = "train"
    text_column: str = "text"
    chunk_size: int = 128
    remainder: Remainder = "drop"
    train_size: int | None = DEFAULT_TRAIN_SIZE
    eval_size: int = 1_000
    encoding: str = "utf-8"
    streaming: bool = False
    shuffle_buffer: int = 10_000
    packing: bool = False
    num_workers: int = 0  # tokenizing processes; 0: this one (its Rust tokenizer uses every core)
    # Where a document ends in .txt input: each line (a file), each blank-line-separated
    # paragraph, or each whole file (a folder). None: a line for a file, a file for a folder.
    # Held-out documents and interval clusters are whole documents: an article's lines must
    # not fall on both sides of the split.
    document_boundary: DocumentBoundary | None = None

    def __post_init__(self) -> None:
        if not str(self.data).strip():
            raise MlmAdaptError("--data must name a dataset id, a file or a directory")
        _choice("remainder", self.remainder, Remainder)
        if self.document_boundary is not None:
            _choice("document_boundary", self.document_boundary, DocumentBoundary)
        _count("chunk_size", self.chunk_size)
        if self.chunk_size < 4:
            raise MlmAdaptError("--chunk-size must be at least 4 (two special tokens plus text)")
        _count("train_size", self.train_size, optional=True)
        _count("eval_size", self.eval_size)
        _count("shuffle_buffer", self.shuffle_buffer)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise MlmAdaptError(f"--num-workers must be 0 (tokenize in this process) or a number of processes, not {self.num_workers!r}")
        if self.streaming and self.train_size not in (None, DEFAULT_TRAIN_SIZE):
            raise MlmAdaptError(
                "--train-size samples chunks from a corpus held in memory; with --streaming every chunk of the "
                "stream is used and --max-steps sets the run's length"
            )
        if not self.text_column.strip() or any(not p for p in self.text_column.split(".")):
            raise MlmAdaptError(f"--text-column {self.text_column!r} is not a column name or dotted path")


@dataclass(frozen=True)
class MaskingConfig:
    """How training and evaluation inputs are masked.

    Evaluation defaults to 15% token masking whatever the training scheme, so
    perplexities of runs with different masking stay comparable.
    """

    masking: Masking = "token"
    mask_prob: float | None = None
    eval_masking: Masking = "token"
    eval_mask_prob: float = 0.15

    def __post_init__(self) -> None:
        _choice("masking", self.masking, Masking)
        _choice("eval_masking", self.eval_masking, Masking)
        _probability("mask_prob", self.mask_prob)
        _probability("eval_mask_prob", self.eval_mask_prob)

    def train_mask_prob(self) -> float:
        return self.mask_prob if self.mask_prob is not None else DEFAULT_MASK_PROB[self.masking]


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation of a model on the held-out part of a corpus."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    batch_size: int = 64
    precision: Precision = "auto"
    seed: int = 42

    def __post_init__(self) -> None:
        _count("batch_size", self.batch_size)
        _choice("precision", self.precision, Precision)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise MlmAdaptError(f"--seed must be a non-negative integer, not {self.seed!r}")


@dataclass(frozen=True)
class TrainConfig(EvalConfig):
    """A domain-adaptation run: the evaluation settings plus the optimisation."""

    output: Path = Path("mlm-adapt-output")
    epochs: int = 3
    max_steps: int | None = None
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    logging_steps: int = 10
    compile: bool = False
    probes: tuple[str, ...] = ()
    report_to: ReportTo = "none"
    push_to_hub: str | None = None
    hub_private: bool = False
    save_steps: int | None = None
    eval_steps: int | None = None
    keep_checkpoints: int | None = 2
    resume: bool = False
    overwrite: bool = False
    add_tokens: int | None = None
    add_tokens_file: Path | None = None
    general_data: str | None = None
    general_split: str = "train"
    general_text_column: str = "text"
    general_encoding: str | None = None
    replay_ratio: float | None = None
    task_data: str | None = None
    task_split: str = "train"
    task_text_column: str | None = None
    task_label_column: str = "label"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "output", Path(self.output))
        _count("epochs", self.epochs)
        _count("max_steps", self.max_steps, optional=True)
        _count("save_steps", self.save_steps, optional=True)
        _count("eval_steps", self.eval_steps, optional=True)
        _count("keep_checkpoints", self.keep_checkpoints, optional=True)
        _count("add_tokens", self.add_tokens, optional=True)
        if self.add_tokens is not None and self.add_tokens_file is not None:
            raise MlmAdaptError("--add-tokens picks the words from the data; --add-tokens-file names them: pick one")
        if self.add_tokens_file is not None:
            object.__setattr__(self, "add_tokens_file", Path(self.add_tokens_file))
        _probability("replay_ratio", self.replay_ratio)
        if self.replay_ratio is not None and (self.general_data is None or self.data.streaming):
            raise MlmAdaptError("--replay-ratio mixes chunks of --general-data into the training set held in memory: "
                                "give --general-data, without --streaming")
        self.task_probe_config()  # refuses unlabelled task data before any training
        _choice("report_to", self.report_to, ReportTo)
        object.__setattr__(self, "probes", tuple(self.probes or ()))
        for probe in self.probes:
            if "[MASK]" not in probe and "<mask>" not in probe:
                raise MlmAdaptError(f"--probe {probe!r} has no [MASK] or <mask>")
        if self.data.streaming and self.max_steps is None:
            raise MlmAdaptError("--streaming needs --max-steps: the length of a stream is not known in advance")
        if self.resume and self.overwrite:
            raise MlmAdaptError("--resume continues the run in --output; --overwrite would start afresh: pick one")
        _count("grad_accum", self.grad_accum)
        _count("logging_steps", self.logging_steps)
        _positive("lr", self.lr)
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise MlmAdaptError(f"--weight-decay must be zero or positive, not {self.weight_decay!r}")
        if not (isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1):
            raise MlmAdaptError(f"--warmup-ratio must be in [0, 1), not {self.warmup_ratio!r}")

    def general_data_config(self) -> DataConfig | None:
        """The general-domain text (--general-data): its held-out side is the forgetting check,
        chunked and masked like the domain's and like ``mlm-adapt evaluate --data`` on it would
        be; its training side is what --replay-ratio mixes in (held-out documents never are)."""
        if self.general_data is None:
            return None
        # Without replay only the held-out side is used: keep the training side to one chunk.
        train_size = None if self.data.streaming or self.replay_ratio is not None else 1
        return dataclasses.replace(
            self.data, data=self.general_data, split=self.general_split, text_column=self.general_text_column,
            encoding=self.general_encoding or self.data.encoding, train_size=train_size)

    def task_probe_config(self) -> ProbeConfig | None:
        """The labelled task (--task-data) on which the run ends with a frozen-encoder probe of
        the base model vs the adapted one (``--output``): did adaptation help the task?"""
        if self.task_data is None:
            return None
        data = DataConfig(data=self.task_data, split=self.task_split, encoding=self.data.encoding,
                          text_column=self.task_text_column or self.data.text_column)
        trust = {"allow_pickle": self.model.allow_pickle, "trust_remote_code": self.model.trust_remote_code}
        return ProbeConfig(models=(self.model, ModelConfig(str(self.output), **trust)), data=data,
                           label_column=self.task_label_column, seed=self.seed)

    def extends_vocabulary(self) -> bool:
        return self.add_tokens is not None or self.add_tokens_file is not None

    def steps_per_epoch(self, train_chunks: int, world_size: int = 1) -> int:
        """Optimizer steps in one pass over ``train_chunks``.

        A last, partial global batch counts if it gives every micro-batch of every
        process at least one chunk: a process with nothing to run would leave the
        others waiting in the gradient all-reduce."""
        full, rest = divmod(train_chunks, self.batch_size * self.grad_accum * world_size)
        return full + (rest >= self.grad_accum * world_size)

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's length: --max-steps, else --epochs passes."""
        if self.max_steps is not None:
            return self.max_steps
        return self.epochs * steps_per_epoch

    def warmup_steps(self, total_steps: int) -> int:
        return math.ceil(self.warmup_ratio * total_steps)


@dataclass(frozen=True)
class VocabConfig:
    """A fragmentation report (``mlm-adapt vocab``): the domain's text, and optionally general text."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    general: DataConfig | None = None
    top: int = 50
    max_documents: int = 100_000

    def __post_init__(self) -> None:
        _count("top", self.top)
        _count("max_documents", self.max_documents)


@dataclass(frozen=True)
class ProbeConfig:
    """A downstream probe (``mlm-adapt probe``): models compared on one labelled dataset,
    with out-of-fold predictions from ``folds``-fold cross-validation repeated ``seeds`` times.

    Defaults: 5 folds x 2 repeats for the frozen probe (ten fits of a logistic regression
    per model take seconds; two repeats halve the split's share of the variance), 3 folds x
    1 repeat with ``finetune`` (three fine-tunes per model, as many as the three seeds of
    earlier versions)."""

    models: tuple[ModelConfig, ...] = (ModelConfig(),)
    data: DataConfig = field(default_factory=DataConfig)
    label_column: str = "label"
    seeds: int | None = None
    folds: int | None = None
    max_rows: int = 2_000
    max_length: int = 128
    seed: int = 42
    finetune: bool = False
    finetune_epochs: int = 3
    finetune_lr: float = 5e-5
    batch_size: int = 16
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        _count("seeds", self.seeds, optional=True)
        _count("folds", self.folds, optional=True)
        if self.folds is not None and self.folds < 2:
            raise MlmAdaptError(f"--folds must be 2 or more, not {self.folds}")
        _count("finetune_epochs", self.finetune_epochs)
        _positive("finetune_lr", self.finetune_lr)
        _count("batch_size", self.batch_size)
        _choice("precision", self.precision, Precision)
        _count("max_rows", self.max_rows)
        _count("max_length", self.max_length)
        if self.data.streaming:
            raise MlmAdaptError("the probe reads its labelled data in memory; drop --streaming")
        if Path(self.data.data).suffix.lower() in (".txt", ".text") or Path(self.data.data).is_dir():
            raise MlmAdaptError(f"--data {self.data.data}: text files hold no labels; use .csv, .jsonl, .json, .parquet or a Hub dataset")

    def fold_count(self) -> int:
        return self.folds if self.folds is not None else (3 if self.finetune else 5)

    def repeats(self) -> int:
        return self.seeds if self.seeds is not None else (1 if self.finetune else 2)


def cache_home() -> Path:
    """mlm-adapt's cache folder: ``$MLM_ADAPT_CACHE``, else ``$XDG_CACHE_HOME/mlm-adapt``."""
    if os.environ.get("MLM_ADAPT_CACHE"):
        return Path(os.environ["MLM_ADAPT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlm-adapt"
