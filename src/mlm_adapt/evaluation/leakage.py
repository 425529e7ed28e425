"""Leakage between what a model trained on and what a probe tests.

Texts equal up to case and runs of white space are one text (``data.duplicates``): they
form one group that never spans a probe's train and test folds. A labelled row whose text
one of the compared models adapted on (``found_in``; the corpora come from the models'
folders, ``provenance``, or are named) is *seen*: it may serve in the probe's training
folds, since the classifier's fit on it says nothing about the adaptation, but it is never
tested (``partition``). The paired test then runs on unseen rows alone (Gururangan et al.
2020 test their task-adapted models the same way: the classifier trains on the texts the
adaptation saw, and is tested on texts no model saw).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from mlm_adapt.data.duplicates import normalised
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation.provenance import TrainedCorpus, documents


def seen_texts(texts) -> set[str]:
    """The normalised form of every text in an iterable of texts (a training corpus)."""
    return {normalised(t) for t in texts}


def found_in(corpora: Iterable[TrainedCorpus], texts: list[str]) -> set[str]:
    """Which of ``texts`` (normalised) a document of ``corpora`` holds, held-out documents
    aside: each corpus read once, as a stream where so configured, keeping the probe's texts only."""
    wanted = {normalised(t) for t in texts}
    found: set[str] = set()
    for corpus in dict.fromkeys(corpora):  # a corpus two models share is read once
        found |= {key for text in documents(corpus) if (key := normalised(text)) in wanted}
    return found


def partition(texts: list[str], labels: np.ndarray, names: list[str], seen: set[str] | None,
              tested: np.ndarray | None, per_class: int) -> tuple[np.ndarray, dict]:
    """Which rows the probe may test (bool per row): those whose text is not ``seen``, and
    where ``tested`` is given (a ``--tapt`` run's held-back rows) only those; and the counts
    the report shows. Refuses a class left with fewer than ``per_class`` testable rows."""
    fresh = np.array([normalised(t) not in seen for t in texts]) if seen else np.ones(len(texts), dtype=bool)
    testable = fresh if tested is None else fresh & tested
    if testable.all():  # nothing left out: the folds check their own rows
        return testable, {"seen_rows": 0, "unseen_rows": len(texts), "probed": "unseen"}
    counts = np.bincount(labels[testable], minlength=len(names))
    few = [f"{names[c]} ({counts[c]})" for c in range(len(names)) if counts[c] < per_class]
    if few:
        where = "rows held back from the task-adaptive run and " if tested is not None else ""
        raise MlmAdaptError(
            f"a probe tests only labelled {where}rows whose text no compared model trained on, and class(es) "
            f"{', '.join(few)} have too few (each needs {per_class}; {int((~fresh).sum())} of {len(texts)} rows were "
            "trained on): hold out more of the task (--task-test-share) or probe labelled data the models did not see")
    return testable, {"seen_rows": int((~fresh).sum()), "unseen_rows": int(fresh.sum()), "probed": "unseen"}
