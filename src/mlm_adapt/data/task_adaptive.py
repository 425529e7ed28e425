"""Task-adaptive pretraining (``train --tapt``; Gururangan et al., "Don't Stop Pretraining",
ACL 2020): masked-LM training on the texts of the labelled task itself, alone or added to
the domain corpus (DAPT+TAPT in one run).

A share of the task's rows is held back (``--task-test-share``): no text of theirs is
trained on, whether it comes from the task or from the domain corpus, so they are what
the run's probe tests. Rows are held back by duplicate group (texts equal up to case and
white space go together), each group drawn by a seeded hash of its text: the same rows
whatever the file's order, on every process.

The corpus a run trains on is then the domain corpus's documents less the held-back texts,
followed by the task's other texts (none when the task is the whole corpus): what
``documents`` lists and ``restrict`` builds from the tokenized corpus, in one order, so
that document numbers (the held-out set's) mean the same to both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from mlm_adapt.data.duplicates import normalised
from mlm_adapt.data.tokenization import TokenizedCorpus, concat_tokens, select_documents


def held_back(texts: list[str], share: float, seed: int) -> np.ndarray:
    """Whether each row is held back: its normalised text's seeded hash falls under ``share``
    (so every copy of a text goes the same way, and a row's fate does not depend on the others)."""
    return np.array([_draw(normalised(t), seed) < share for t in texts], dtype=bool)


def _draw(key: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(frozen=True)
class TaskTexts:
    """The labelled task's texts a ``--tapt`` run adapts on: every row's text, in the task
    file's order, which are held back, and whether the task is the whole corpus (``--tapt``
    without ``--data``) or is added to it."""

    texts: tuple[str, ...]
    held: np.ndarray  # bool per row
    alone: bool  # the corpus gains none of the task's texts (it is the task, or only loses the held-back rows)

    @classmethod
    def draw(cls, texts: Iterable[str], share: float, seed: int, alone: bool) -> "TaskTexts":
        texts = tuple(texts)
        return cls(texts, held_back(list(texts), share, seed), alone)

    def held_keys(self) -> set[str]:
        """The normalised texts no document trained on may have."""
        return {normalised(t) for t, held in zip(self.texts, self.held) if held}

    def added(self) -> list[str]:
        """The task's texts the corpus gains (none when the task is the corpus itself)."""
        return [] if self.alone else [t for t, held in zip(self.texts, self.held) if not held and t.strip()]


def kept(texts: Iterable[str], held: set[str]) -> Iterator[bool]:
    """Whether each non-empty document of a corpus stays in the training corpus."""
    for text in texts:
        if text.strip():
            yield normalised(text) not in held


def restrict(tokens: TokenizedCorpus, corpus_texts: Iterable[str], task: TaskTexts, encode) -> TokenizedCorpus:
    """The tokenized training corpus of a ``--tapt`` run: ``tokens`` (the domain corpus's
    non-empty documents, in order; ``corpus_texts`` their texts, blank ones included, as read)
    without the held-back texts, then the task's added texts (``encode``: texts -> tokens)."""
    keep = np.fromiter(kept(corpus_texts, task.held_keys()), dtype=bool, count=tokens.num_documents)
    parts = [select_documents(tokens, keep)]
    if task.added():
        parts.append(encode(task.added()))
    return concat_tokens(parts)


def documents(corpus_texts: Iterable[str], task: TaskTexts) -> Iterator[str]:
    """The training corpus's documents in the order ``restrict`` numbers them."""
    held = task.held_keys()
    for text in corpus_texts:
        if text.strip() and normalised(text) not in held:
            yield text
    yield from task.added()


def read(data, share: float, seed: int, alone: bool) -> TaskTexts:
    """The labelled task's texts (``data``: a ``DataConfig``, every row, blank ones included, in
    the order a probe reads them) and the draw of its held-back rows."""
    from mlm_adapt.data.corpus import load_corpus

    return TaskTexts.draw((text for batch in load_corpus(data).batches() for text in batch), share, seed, alone)


def for_run(config) -> TaskTexts | None:
    """A ``TrainConfig``'s task texts: with ``--tapt`` or ``--hold-back-task``, the task's rows
    and the draw of its held-back rows by the split seed (the same rows for runs that differ
    in ``--seed`` alone)."""
    if not config.holds_back_task():
        return None
    return read(config.task_probe_config().data, config.task_test_share, config.data_seed(), config.tapt_alone())
