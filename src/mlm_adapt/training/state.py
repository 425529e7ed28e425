"""Where a run is (:class:`RunState`, what a checkpoint carries) and how fast its steps go
(:class:`Timer`)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from mlm_adapt.training.optimizer_step import WARMUP_STEPS_NOT_TIMED


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
