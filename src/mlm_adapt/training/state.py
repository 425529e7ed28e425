"""Where a run is (:class:`RunState`, what a checkpoint carries), how fast its steps go
(:class:`Timer`), and the bookkeeping the loop does with them: reading finished steps into
the state, recording evaluations, and sending both to the trackers."""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from mlm_adapt.config import TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.training import checkpoints
from mlm_adapt.training.optimizer_step import WARMUP_STEPS_NOT_TIMED

log = logging.getLogger("mlm_adapt")


@dataclass
class RunState:
    """Where a run is; JSON-serialisable so a checkpoint can carry it."""

    options: dict[str, Any]
    before: dict[str, float]
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_nll: float = 0.0
    epoch_tokens: int = 0
    chunks_trained: int = 0  # counted over all processes, each chunk once per time it is trained on
    history: list[dict] = field(default_factory=list)
    log_history: list[dict] = field(default_factory=list)

    def advance(self) -> None:
        self.step, self.step_in_epoch = self.step + 1, self.step_in_epoch + 1

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.epoch_nll, self.epoch_tokens = self.epoch + 1, 0, 0.0, 0


@dataclass
class Timer:
    """Throughput of optimizer steps alone (no evaluation or checkpointing), after the first
    few. A step's time runs from the previous read (or ``mark``, set when steps resume)
    to its own read: on a GPU, the moment it has finished. Also where this invocation's
    time went: every step's (``step_seconds``) and the work around them (``spend``)."""

    started: float = field(default_factory=time.perf_counter)
    mark: float | None = None
    steps: int = 0
    timed_seconds: float = 0.0
    timed_samples: int = 0
    step_seconds: float = 0.0
    spent: dict[str, float] = field(default_factory=dict)

    def tick(self, samples: int) -> None:
        now = time.perf_counter()
        self.steps += 1
        self.step_seconds += now - self.mark
        if self.steps > WARMUP_STEPS_NOT_TIMED:
            self.timed_seconds += now - self.mark
            self.timed_samples += samples
        self.mark = now

    @contextmanager
    def spend(self, kind: str) -> Iterator[None]:
        """Add the time the block takes to ``spent[kind]``."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.spent[kind] = self.spent.get(kind, 0.0) + time.perf_counter() - began

    def breakdown(self) -> dict[str, float]:
        """Seconds of this invocation: in training steps, in each kind of ``spend``, in
        everything else (loading, tokenizing, saving), and in all."""
        total = time.perf_counter() - self.started
        seconds = {"training": self.step_seconds, **self.spent}
        return {**seconds, "other": max(0.0, total - sum(seconds.values())), "total": total}

    def samples_per_second(self) -> float:
        return self.timed_samples / self.timed_seconds if self.timed_seconds > 0 else float("nan")


def check_finite(loss: float, step: int, output) -> None:
    if not math.isfinite(loss):
        kept = checkpoints.complete_checkpoints(output)
        where = f"the last good checkpoint is {kept[-1]} (--resume continues from it)" if kept else "no checkpoint was written yet"
        raise MlmAdaptError(
            f"the training loss became {loss} at step {step}; {where}. Lower --lr, or use --precision fp32 "
            "to rule out overflow"
        )


def tracker_config(options: dict[str, Any]) -> dict[str, Any]:
    # Trackers take scalars and strings only.
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in options.items()}


def log_to_trackers(accelerator, state: RunState, seen: tuple[int, int]) -> None:
    """Send the step's new log and epoch entries: the same numbers metrics.json records."""
    for entry in state.log_history[seen[0]:]:
        accelerator.log({"train/loss": entry["loss"], "train/lr": entry["lr"]}, step=entry["step"])
    for entry in state.history[seen[1]:]:
        values = {"eval/loss": entry["eval_loss"], "eval/perplexity": entry["perplexity"], "epoch": entry["epoch"]}
        if entry["train_loss"] is not None:
            values["train/epoch_loss"] = entry["train_loss"]
        accelerator.log(values, step=entry["step"])


def read_steps(state: RunState, config: TrainConfig, outcomes: list, timer: Timer, bar) -> bool:
    """Add the results of ``outcomes`` ((step, lr, StepOutcome), in order) to the run's state;
    whether any of them carries a stop request."""
    stop = False
    for step, lr, outcome in outcomes:
        stop |= outcome.stop_requested()
        nll, tokens, chunks = outcome.read()
        timer.tick(chunks)
        state.chunks_trained += chunks
        loss = nll / max(tokens, 1)
        check_finite(loss, step, config.output)
        state.epoch_nll += nll
        state.epoch_tokens += tokens
        if step % config.logging_steps == 0 or step == 1:
            state.log_history.append({"step": step, "loss": loss, "lr": lr})
        bar.set_postfix(loss=f"{loss:.3f}")
    return stop


def record_evaluation(state: RunState, record: dict[str, Any], epoch_done: bool, steps_per_epoch: int) -> None:
    """Append an evaluation to the history (its "epoch" is fractional between epoch ends)."""
    fraction = state.step_in_epoch / steps_per_epoch
    state.history.append({
        "epoch": state.epoch + 1 if epoch_done else round(state.epoch + fraction, 4),
        "step": state.step,
        "train_loss": state.epoch_nll / state.epoch_tokens if state.epoch_tokens else None,
        **record,
    })
    general = f", general perplexity {record['general_perplexity']:.3f}" if "general_perplexity" in record else ""
    log.info("epoch %s: train loss %.4f, eval loss %.4f, perplexity %.3f%s", state.history[-1]["epoch"],
             state.history[-1]["train_loss"] or float("nan"), record["eval_loss"], record["perplexity"], general)
