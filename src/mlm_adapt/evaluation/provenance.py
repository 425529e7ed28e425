"""What a model adapted on, as the folder of a run or a blend records it (``trained_on.json``):
what lets a probe leave every text one of its models trained on out of its tests
(``leakage``), also when it runs later on the folder (``mlm-adapt probe --model runs/x``).

A run records the model it started from and its training corpora: ``--data`` (with
``--tapt``, the task data and the draw of its held-back rows), and with ``--replay-ratio``
the general text's training side; for each, the documents it held out and never trained
on. A blend records its two models. What a model saw is what its record says plus what the
model it started from saw, back to the first model without a record (a Hub model, whose
pretraining text is not known here).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mlm_adapt.config import DataConfig
from mlm_adapt.data import task_adaptive
from mlm_adapt.errors import MlmAdaptError

RECORD = "trained_on.json"


@dataclass(frozen=True)
class TaskDraw:
    """A ``--tapt`` run's labelled task: its data and the seeded draw of its held-back rows."""

    data: DataConfig
    share: float
    seed: int
    alone: bool  # the task's texts were the whole corpus


@dataclass(frozen=True)
class TrainedCorpus:
    """A corpus a model trained on, less the documents it held out (by document number, or
    by row for a stream)."""

    data: DataConfig
    held_out: frozenset[int] = frozenset()
    held_out_rows: frozenset[int] = frozenset()
    task: TaskDraw | None = None


def _located(name: str) -> str:
    """A local path as an absolute one (the record is read from anywhere later); else as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _data_record(data: DataConfig) -> dict[str, Any]:
    return {**dataclasses.asdict(data), "data": _located(data.data)}


def corpus_record(corpus: TrainedCorpus) -> dict[str, Any]:
    record = {"data": _data_record(corpus.data), "held_out": sorted(corpus.held_out),
              "held_out_rows": sorted(corpus.held_out_rows)}
    if corpus.task is not None:
        record["task"] = {**dataclasses.asdict(corpus.task), "data": _data_record(corpus.task.data)}
    return record


def _corpus(record: dict[str, Any]) -> TrainedCorpus:
    task = record.get("task")
    draw = None if task is None else TaskDraw(DataConfig(**task["data"]), task["share"], task["seed"], task["alone"])
    return TrainedCorpus(DataConfig(**record["data"]), frozenset(record["held_out"]), frozenset(record["held_out_rows"]), draw)


def run_corpora(config, prepared) -> list[TrainedCorpus]:
    """The corpora a run (``TrainConfig``, its ``Prepared``) trains on, less what it held out."""
    def numbers(values) -> frozenset[int]:
        return frozenset(() if values is None else np.asarray(values).tolist())

    draw = None
    if prepared.task is not None:
        draw = TaskDraw(config.task_probe_config().data, config.task_test_share, config.data_seed(), prepared.task.alone)
    found = [TrainedCorpus(config.data, numbers(prepared.data.held_out), numbers(prepared.data.held_out_rows), draw)]
    if config.replay_ratio is not None:  # the general text's training side, whose chunks were mixed in
        found.append(TrainedCorpus(config.general_data_config(), numbers(prepared.general_held_out)))
    return found


def write(folder: Path, started_from: str | None, corpora: list[TrainedCorpus], models: tuple[str, ...] = ()) -> None:
    """Record in ``folder`` the model a run started from and the corpora it trained on, or
    (``models``) the models a blend mixed."""
    record = {"started_from": started_from and _located(started_from), "corpora": [corpus_record(c) for c in corpora],
              "models": [_located(m) for m in models]}
    (Path(folder) / RECORD).write_text(json.dumps(record), encoding="utf-8")


def corpora(model: str, _visited: frozenset[str] = frozenset()) -> list[TrainedCorpus]:
    """Every corpus ``model`` (a name or folder) trained on, as far as records go."""
    path = Path(model).expanduser()
    record_path = path / RECORD
    key = str(path.resolve()) if path.exists() else model
    if key in _visited or not record_path.is_file():
        return []
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        found = [_corpus(c) for c in record.get("corpora", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise MlmAdaptError(f"{record_path}: unreadable record of what the model trained on ({exc})") from None
    visited = _visited | {key}
    for earlier in [record.get("started_from"), *record.get("models", [])]:
        if earlier:
            found += corpora(earlier, visited)
    return found


def documents(corpus: TrainedCorpus) -> Iterator[str]:
    """The texts of the documents ``corpus`` trained on (its held-out documents left out)."""
    from mlm_adapt.data.corpus import load_corpus, numbered_documents

    if corpus.task is None:
        for row, number, text in numbered_documents(corpus.data):
            if number not in corpus.held_out and row not in corpus.held_out_rows:
                yield text
        return
    task = task_adaptive.TaskTexts.draw(_texts(corpus.task.data), corpus.task.share, corpus.task.seed, corpus.task.alone)
    texts = (text for batch in load_corpus(corpus.data).batches() for text in batch)
    for number, text in enumerate(task_adaptive.documents(texts, task)):
        if number not in corpus.held_out:
            yield text


def _texts(data: DataConfig) -> Iterator[str]:
    from mlm_adapt.data.corpus import load_corpus

    return (text for batch in load_corpus(data).batches() for text in batch)


def same_data(a: DataConfig, b: DataConfig) -> bool:
    """Whether two data options read the same rows' texts (paths compared resolved)."""
    def where(data: DataConfig) -> str:
        path = Path(data.data).expanduser()
        return str(path.resolve()) if path.exists() else data.data
    return (where(a), a.split, a.text_column, a.encoding) == (where(b), b.split, b.text_column, b.encoding)


def held_back_rows(found: list[TrainedCorpus], data: DataConfig, texts: list[str]) -> np.ndarray | None:
    """The rows of the labelled ``data`` (``texts``, in order) that a ``--tapt`` run among
    ``found`` held back, which alone may be tested; None where no run adapted on ``data``'s texts."""
    held = None
    for corpus in found:
        if corpus.task is not None and same_data(corpus.task.data, data):
            rows = task_adaptive.held_back(texts, corpus.task.share, corpus.task.seed)
            held = rows if held is None else held & rows
    return held
