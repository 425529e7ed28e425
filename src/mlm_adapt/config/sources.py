"""Typed, validated configuration of what a run and an evaluation share: the model, the
data, the masking and the evaluation settings.

Every dataclass here is frozen and checks its own values at construction, so a bad
option fails before any model or data is loaded. Values that follow from others (the
mask rate a masking scheme defaults to, the number of optimizer steps) are methods,
never fields written later. Each field's docstring is its ``--help`` text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlm_adapt.config.fields import (
    DEFAULT_MASK_PROB,
    DEFAULT_TRAIN_SIZE,
    DocumentBoundary,
    Masking,
    Precision,
    Remainder,
    choice,
    count,
    probability,
)
from mlm_adapt.errors import MlmAdaptError


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained masked LM to start from and how far to trust its files."""

    model: str = "distilbert-base-uncased"
    """Hub model id or local folder of the masked LM to start from."""
    allow_pickle: bool = False
    """Load .bin (pickle) weights; they can run code, so only for files you trust."""
    trust_remote_code: bool = False
    """Run model code from the Hub repo."""

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise MlmAdaptError("--model must name a Hub model id or a local directory")
        if str(self.model).startswith("~"):
            object.__setattr__(self, "model", str(Path(self.model).expanduser()))


@dataclass(frozen=True)
class DataConfig:
    """Where the domain text comes from and how it becomes fixed-length chunks."""

    data: str = "imdb"
    """Hub dataset id[:config], a .txt/.jsonl/.json/.csv/.parquet file (also compressed), or a folder of .txt."""
    split: str = "train"
    """Split or slice, e.g. 'train[:5000]'."""
    text_column: str = "text"
    """Column with the text; a dotted path for nested fields (answers.text)."""
    chunk_size: int = 128
    """Tokens per chunk, special tokens included."""
    remainder: Remainder = "drop"
    """What to do with the last, short chunk of the corpus."""
    train_size: int | None = DEFAULT_TRAIN_SIZE
    """Training chunks to sample (not with --streaming)."""
    eval_size: int = 1_000
    """Held-out chunks to evaluate on (whole documents are held out)."""
    encoding: str = "utf-8"
    """Text encoding of local files."""
    streaming: bool = False
    """Read the data as a stream, never all in memory (needs --max-steps to train)."""
    shuffle_buffer: int = 10_000
    """With --streaming: chunks held for shuffling."""
    packing: bool = False
    """No attention across the documents a chunk packs together (many short documents)."""
    num_workers: int = 0
    """Processes that tokenize (0: this one, whose Rust tokenizer already uses every core)."""
    document_boundary: DocumentBoundary | None = None
    """Where a .txt document ends: each line, each blank-line-separated paragraph, or each
    whole file (default: line for a file, file for a folder). Held-out documents and interval
    clusters are whole documents: an article's lines never fall on both sides of the split."""

    def __post_init__(self) -> None:
        if not str(self.data).strip():
            raise MlmAdaptError("--data must name a dataset id, a file or a directory")
        choice("remainder", self.remainder, Remainder)
        if self.document_boundary is not None:
            choice("document_boundary", self.document_boundary, DocumentBoundary)
        count("chunk_size", self.chunk_size)
        if self.chunk_size < 4:
            raise MlmAdaptError("--chunk-size must be at least 4 (two special tokens plus text)")
        count("train_size", self.train_size, optional=True)
        count("eval_size", self.eval_size)
        count("shuffle_buffer", self.shuffle_buffer)
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
    """How training inputs are masked."""
    mask_prob: float | None = None
    """Masking rate of training inputs (by default the scheme's own)."""
    eval_masking: Masking = "token"
    """Masking of the held-out set (drawn once)."""
    eval_mask_prob: float = 0.15
    """Masking rate of the held-out set."""

    def __post_init__(self) -> None:
        choice("masking", self.masking, Masking)
        choice("eval_masking", self.eval_masking, Masking)
        probability("mask_prob", self.mask_prob)
        probability("eval_mask_prob", self.eval_mask_prob)

    def train_mask_prob(self) -> float:
        return self.mask_prob if self.mask_prob is not None else DEFAULT_MASK_PROB[self.masking]


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation of a model on the held-out part of a corpus."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    batch_size: int = 64
    """Chunks per device per micro-batch."""
    precision: Precision = "auto"
    """Numeric precision of training and evaluation (auto: bf16 where the hardware has it)."""
    seed: int = 42
    """Seed of the training order, training masks, dropout and new weights; also of the split
    (held-out documents, their masks, a task's held-back rows) unless --split-seed is given."""
    split_seed: int | None = None
    """Seed of what runs compared must share: the held-out documents and their masks, the
    general text's held-out documents, a task's held-back rows and probe folds (default:
    --seed). Runs that differ only in --seed then differ only in how they trained."""

    def __post_init__(self) -> None:
        count("batch_size", self.batch_size)
        choice("precision", self.precision, Precision)
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if (value is not None or name == "seed") and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise MlmAdaptError(f"--{name.replace('_', '-')} must be a non-negative integer, not {value!r}")

    def data_seed(self) -> int:
        """The seed of the split and the evaluation masks: --split-seed, else --seed (as before
        --split-seed existed, so old configs and checkpoints read the same)."""
        return self.seed if self.split_seed is None else self.split_seed


def cache_home() -> Path:
    """mlm-adapt's cache folder: ``$MLM_ADAPT_CACHE``, else ``$XDG_CACHE_HOME/mlm-adapt``."""
    if os.environ.get("MLM_ADAPT_CACHE"):
        return Path(os.environ["MLM_ADAPT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlm-adapt"
