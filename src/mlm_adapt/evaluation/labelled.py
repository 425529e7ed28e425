"""A probe's labelled data: the rows' texts and class labels (refusing what cannot be
probed), and the seeded sample of at most ``--max-rows`` rows it uses."""

from __future__ import annotations

import numpy as np

from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.errors import MlmAdaptError

MIN_PER_CLASS = 5  # rows a class needs: a few to train on and at least one to test on


def encode_labels(values: list) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names; refuses what cannot be probed."""
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        missing = sum(v is None or (isinstance(v, float) and np.isnan(v)) for v in values)
        raise MlmAdaptError(f"--label-column: {missing} of {len(values)} rows have no label; drop or fill them")
    names = sorted({str(v) for v in values})
    if len(names) < 2:
        raise MlmAdaptError(f"--label-column: every row has the label {names[0]!r}; a probe needs two classes or more")
    labels = np.array([names.index(str(v)) for v in values])
    counts = np.bincount(labels, minlength=len(names))
    few = [f"{names[c]} ({counts[c]})" for c in range(len(names)) if counts[c] < MIN_PER_CLASS]
    if few:
        raise MlmAdaptError(f"--label-column: too few rows for class(es) {', '.join(few)}; each needs {MIN_PER_CLASS}")
    return labels, names


def labelled_texts(config) -> tuple[list[str], np.ndarray, list[str]]:
    """Every labelled row's text, class index, and the class names (:func:`sample` then
    keeps at most ``max_rows``)."""
    from mlm_adapt.data.corpus import load_corpus

    corpus = load_corpus(config.data)
    if config.label_column not in corpus.dataset.column_names:
        raise MlmAdaptError(f"--label-column {config.label_column!r} not found; the data has columns: "
                            f"{', '.join(corpus.dataset.column_names)}")
    labels, names = encode_labels(corpus.dataset[config.label_column])
    texts = [t for batch in corpus.batches() for t in batch]
    return texts, labels, names


def sample(testable: np.ndarray, config) -> tuple[np.ndarray, int]:
    """The rows a probe uses, at most ``config.max_rows``, a seeded sample where there are more
    (a file's order may follow its labels, so not its head): the testable rows first (all of
    them where they fill ``max_rows``), then rows that only train fill the rest. Returns the
    rows and how many of them, at the front, are tested."""
    rng = generator(config.seed, Salt.PROBE_ROWS)
    tested, extra = np.flatnonzero(testable), np.flatnonzero(~testable)
    if len(tested) > config.max_rows:
        tested = np.sort(rng.choice(tested, config.max_rows, replace=False))
    room = config.max_rows - len(tested)
    if len(extra) > room:
        extra = np.sort(rng.choice(extra, room, replace=False))
    return np.concatenate([tested, extra]), len(tested)
