"""A domain-adaptation run's configuration: the evaluation settings plus the optimisation,
checkpoints, forgetting and task checks. Each field's docstring is its ``--help`` text."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from mlm_adapt.config.fields import ReportTo, Select, choice, count, non_negative, positive, probability
from mlm_adapt.config.sources import DataConfig, EvalConfig, ModelConfig
from mlm_adapt.config.tools import ProbeConfig
from mlm_adapt.errors import MlmAdaptError


@dataclass(frozen=True)
class Rule:
    """How a run chooses the model it saves among its evaluations (``training.selection``):
    ``select`` ("last" or "best") and an optional forgetting limit."""

    select: str = "last"
    max_forgetting: float | None = None  # percent

    @property
    def chooses(self) -> bool:
        """Whether the rule picks among evaluations (and so keeps the selected weights)."""
        return self.select == "best" or self.max_forgetting is not None

    def describe(self) -> str:
        if self.max_forgetting is not None:
            return (f"lowest held-out perplexity among evaluations whose general-text perplexity rose at most "
                    f"{self.max_forgetting:g}%")
        return "lowest held-out perplexity" if self.select == "best" else "last step"


@dataclass(frozen=True)
class LoraSettings:
    """What ``--lora-rank`` asks for (``modeling.adapters`` builds it with peft)."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...] = ()  # last parts of linear layers' names; () = all of the encoder's
    train_head: bool = False


@dataclass(frozen=True)
class TrainConfig(EvalConfig):
    """A domain-adaptation run: the evaluation settings plus the optimisation."""

    output: Path = Path("mlm-adapt-output")
    """Folder for the adapted model."""
    epochs: int = 3
    """Passes over the training chunks."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides --epochs)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 2e-5
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.0
    """Share of steps for linear warm-up."""
    logging_steps: int = 10
    """Record the training loss every N steps."""
    compile: bool = False
    """torch.compile the encoder (slower on small CPUs; see docs/performance.md)."""
    probes: tuple[str, ...] = ()
    """A text with [MASK] for the report's before/after table (repeatable: --probe)."""
    report_to: ReportTo = "none"
    """Experiment tracker."""
    push_to_hub: str | None = None
    """Upload the final folder to this Hub repo (user/name)."""
    hub_private: bool = False
    """Create the Hub repo as private."""
    save_steps: int | None = None
    """Also checkpoint every N steps (always at epoch ends)."""
    eval_steps: int | None = None
    """Also evaluate every N steps (always at epoch ends and the last step)."""
    eval_batch_size: int | None = None
    """Chunks per micro-batch of the evaluations (default: --batch-size). They run no backward
    pass, so a batch larger than a small training batch fits, and runs faster per chunk."""
    keep_checkpoints: int | None = 2
    """Keep the newest K checkpoints."""
    select: Select = "last"
    """Which evaluated model to save: the last step's (its held-out perplexity is then an unbiased
    estimate), or best, the one with the lowest held-out perplexity (chosen on the held-out set:
    slightly optimistic)."""
    max_forgetting: float | None = None
    """With --general-data: save the lowest held-out perplexity among the evaluations whose
    general-text perplexity rose at most PCT percent (implies --select best)."""
    early_stop: int | None = None
    """End the run after N evaluations without a lower held-out perplexity (within
    --max-forgetting, if given); implies --select best."""
    resume: bool = False
    """Continue from the newest complete checkpoint in --output."""
    overwrite: bool = False
    """Write into an output folder that holds files (its checkpoints are cleared)."""
    add_tokens: int | None = None
    """Add the N domain words whose splitting costs most as whole tokens (see `mlm-adapt vocab`)."""
    add_tokens_file: Path | None = None
    """Add the words of this file (one per line) as whole tokens."""
    general_data: str | None = None
    """General-domain text held out to measure forgetting (same forms as --data)."""
    general_split: str = "train"
    """Split of --general-data."""
    general_text_column: str = "text"
    """Text column of --general-data."""
    general_encoding: str | None = None
    """Text encoding of --general-data (default: --encoding)."""
    replay_ratio: float | None = None
    """Share of training chunks drawn from --general-data's training side (limits forgetting)."""
    task_data: str | None = None
    """Labelled task data (csv/jsonl/parquet/Hub): the run ends with a probe of base vs adapted model."""
    task_split: str = "train"
    """Split of --task-data."""
    task_text_column: str | None = None
    """Text column of --task-data (default: --text-column)."""
    task_label_column: str = "label"
    """Label column of --task-data."""
    tapt: bool = False
    """Task-adaptive pretraining: adapt on the texts of --task-data's rows too (all but a
    held-back share, --task-test-share, which the run's probe tests); without --data, on
    them alone."""
    hold_back_task: bool = False
    """Without --tapt: keep --task-data's held-back rows (--task-test-share, drawn by
    --split-seed) out of --data's training side, adapting on none of the task's texts: a DAPT
    run whose probe tests the rows a TAPT run's does (what `mlm-adapt compare` runs)."""
    task_probe: bool = True
    """With --task-data: end the run with a probe of base vs adapted model (off: `mlm-adapt
    compare` measures its runs together)."""
    task_test_share: float = 0.3
    """With --tapt: the share of --task-data's rows held back (whole duplicate groups, drawn by
    --split-seed): no text of theirs is trained on, and the run's probe tests them alone."""
    lora_rank: int | None = None
    """Train low-rank adapters (LoRA, with peft) of this rank instead of every weight: a step
    skips the frozen matrices' weight gradients and AdamW keeps state for the adapters alone
    (under 1% of the weights at rank 8). It learns less and forgets less (docs/levers.md).
    The output is a plain merged model, with the adapter in adapter/."""
    lora_alpha: float | None = None
    """LoRA's scale: updates are alpha / rank x B A (default: 2 x --lora-rank)."""
    lora_dropout: float = 0.05
    """Dropout on the adapters' inputs."""
    lora_targets: str | None = None
    """Comma-separated names of the encoder's linear layers that take adapters (e.g. query,value;
    default: every attention and feed-forward layer). Fewer: fewer weights, less change."""
    lora_train_head: bool = False
    """With --lora-rank: train the MLM head in full too, with the input embeddings its decoder is
    tied to (BERT-base: 23M more weights and their AdamW state, and more forgetting). Default:
    frozen, words added by --add-tokens excepted (their rows alone train)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "output", Path(self.output))
        count("epochs", self.epochs)
        count("max_steps", self.max_steps, optional=True)
        count("save_steps", self.save_steps, optional=True)
        count("eval_steps", self.eval_steps, optional=True)
        count("eval_batch_size", self.eval_batch_size, optional=True)
        count("keep_checkpoints", self.keep_checkpoints, optional=True)
        choice("select", self.select, Select)
        count("early_stop", self.early_stop, optional=True)
        if self.max_forgetting is not None:
            non_negative("max_forgetting", self.max_forgetting)
            if self.general_data is None:
                raise MlmAdaptError("--max-forgetting limits the rise of general-text perplexity: give --general-data")
        count("add_tokens", self.add_tokens, optional=True)
        if self.add_tokens is not None and self.add_tokens_file is not None:
            raise MlmAdaptError("--add-tokens picks the words from the data; --add-tokens-file names them: pick one")
        if self.add_tokens_file is not None:
            object.__setattr__(self, "add_tokens_file", Path(self.add_tokens_file))
        probability("replay_ratio", self.replay_ratio)
        if self.replay_ratio is not None and (self.general_data is None or self.data.streaming):
            raise MlmAdaptError("--replay-ratio mixes chunks of --general-data into the training set held in memory: "
                                "give --general-data, without --streaming")
        self.task_probe_config()  # refuses unlabelled task data before any training
        probability("task_test_share", self.task_test_share)
        if self.tapt and self.task_data is None:
            raise MlmAdaptError("--tapt adapts on the texts of the labelled task: give --task-data")
        if self.tapt and self.data.streaming:
            raise MlmAdaptError("--tapt holds the task's held-back texts out of a corpus read in memory: drop --streaming")
        if self.hold_back_task and (self.task_data is None or self.data.streaming):
            raise MlmAdaptError("--hold-back-task keeps the task's held-back rows out of a corpus read in memory: "
                                "give --task-data, without --streaming")
        self._check_lora()
        choice("report_to", self.report_to, ReportTo)
        object.__setattr__(self, "probes", tuple(self.probes or ()))
        for probe in self.probes:
            if "[MASK]" not in probe and "<mask>" not in probe:
                raise MlmAdaptError(f"--probe {probe!r} has no [MASK] or <mask>")
        if self.data.streaming and self.max_steps is None:
            raise MlmAdaptError("--streaming needs --max-steps: the length of a stream is not known in advance")
        if self.resume and self.overwrite:
            raise MlmAdaptError("--resume continues the run in --output; --overwrite would start afresh: pick one")
        count("grad_accum", self.grad_accum)
        count("logging_steps", self.logging_steps)
        positive("lr", self.lr)
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise MlmAdaptError(f"--weight-decay must be zero or positive, not {self.weight_decay!r}")
        if not (isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1):
            raise MlmAdaptError(f"--warmup-ratio must be in [0, 1), not {self.warmup_ratio!r}")

    def _check_lora(self) -> None:
        count("lora_rank", self.lora_rank, optional=True)
        if self.lora_alpha is not None:
            positive("lora_alpha", self.lora_alpha)
        if not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            raise MlmAdaptError(f"--lora-dropout must be in [0, 1), not {self.lora_dropout!r}")
        given = [name for name, on in (("--lora-alpha", self.lora_alpha is not None), ("--lora-targets", self.lora_targets),
                                       ("--lora-train-head", self.lora_train_head)) if on]
        if self.lora_rank is None and given:
            raise MlmAdaptError(f"{', '.join(given)} set(s) up LoRA adapters: give --lora-rank too")
        if self.lora_rank is not None and self.compile:
            raise MlmAdaptError("--compile with --lora-rank is not supported (peft's layers are untested under "
                                "torch.compile here, and compiling was slower on CPUs anyway): drop --compile")
        if self.lora_targets is not None and not self.lora_settings().targets:
            raise MlmAdaptError(f"--lora-targets {self.lora_targets!r} names no layer: give names such as query,value")

    def lora_settings(self) -> LoraSettings | None:
        """The LoRA adapters of --lora-rank, or None for a full fine-tune."""
        if self.lora_rank is None:
            return None
        targets = tuple(t.strip() for t in (self.lora_targets or "").split(",") if t.strip())
        alpha = self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank
        return LoraSettings(self.lora_rank, float(alpha), float(self.lora_dropout), targets, self.lora_train_head)

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
                           label_column=self.task_label_column, seed=self.data_seed())

    def holds_back_task(self) -> bool:
        """Whether the task's held-back rows are kept out of training (--tapt, --hold-back-task)."""
        return self.tapt or self.hold_back_task

    def tapt_alone(self) -> bool:
        """Whether the corpus gains none of the task's texts: a --tapt run whose corpus is the
        task's texts alone (--data names the task data), or --hold-back-task."""
        return self.hold_back_task and not self.tapt or self.tapt and self.data.data == self.task_data

    def selection_rule(self) -> Rule:
        """How the saved model is chosen among the run's evaluations (``training.selection``)."""
        chooses = self.max_forgetting is not None or self.early_stop is not None
        return Rule("best" if chooses else self.select, self.max_forgetting)

    def evaluation_batch_size(self) -> int:
        """Chunks per micro-batch of the run's evaluations and word ledger."""
        return self.eval_batch_size or self.batch_size

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
