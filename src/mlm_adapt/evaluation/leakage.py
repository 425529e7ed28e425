"""Leakage between what a model trained on and what it is tested on.

Texts equal up to case and runs of white space are one text (``data.duplicates``): they
form one group that never spans a probe's train and test folds, and a probe text that
the adaptation corpus holds outside its held-out documents counts as seen (``found_in``);
the probe then runs on the unseen rows where enough remain (``unseen``).
"""

from __future__ import annotations

import numpy as np

from mlm_adapt.data.duplicates import normalised


def seen_texts(texts) -> set[str]:
    """The normalised form of every text in an iterable of texts (a training corpus)."""
    return {normalised(t) for t in texts}


def found_in(corpus_config, texts: list[str], held_out: np.ndarray | None = None,
             held_out_rows: np.ndarray | None = None) -> set[str]:
    """Which of ``texts`` (normalised) a corpus holds as a document outside ``held_out``
    (document numbers, ``corpus.numbered_documents``) and ``held_out_rows`` (a stream's rows):
    the corpus is read once, as a stream where so configured, holding only the probe's texts."""
    from mlm_adapt.data.corpus import numbered_documents

    wanted = {normalised(t) for t in texts}
    skip = set() if held_out is None else set(held_out.tolist())
    skip_rows = set() if held_out_rows is None else set(held_out_rows.tolist())
    return {key for row, number, text in numbered_documents(corpus_config)
            if number not in skip and row not in skip_rows and (key := normalised(text)) in wanted}


def unseen(texts: list[str], labels: np.ndarray, names: list[str], seen: set[str] | None,
           per_class: int) -> tuple[list[str], np.ndarray, dict | None]:
    """The rows whose text is not in ``seen`` where every class keeps enough for the folds;
    else all rows, with the leak recorded. ``per_class``: the rows each class needs."""
    if not seen:
        return texts, labels, None
    fresh = np.array([normalised(t) not in seen for t in texts])
    kept = labels[fresh]
    enough = len(np.unique(kept)) == len(names) and np.bincount(kept, minlength=len(names)).min() >= per_class
    leakage = {"seen_rows": int((~fresh).sum()), "unseen_rows": int(fresh.sum()), "probed": "unseen" if enough else "all"}
    if not enough:
        return texts, labels, leakage
    return [t for t, f in zip(texts, fresh) if f], kept, leakage
