"""Every random stream of a run, derived from the one ``--seed``.

Each use of randomness has its own salt in :class:`Salt`; a generator is seeded by
(seed, salt, number of indices, indices...). Two streams can therefore only
coincide if their salts do, and ``@unique`` makes that an import error.

The count of indices is part of the key because numpy's ``SeedSequence`` pads its
entropy with zeros: ``default_rng([s, a])`` and ``default_rng([s, a, 0])`` are the
same generator. Without it, the masks of step 0 (seed, salt, epoch, 0) would be the
draws that shuffled that epoch (seed, salt, epoch).
"""

from __future__ import annotations

from enum import IntEnum, unique

import numpy as np


@unique
class Salt(IntEnum):
    """One value per random stream; values are arbitrary but must differ."""

    SPLIT = 0x5B17  # which documents are held out (in memory)
    TRAIN_ROWS = 0x7201  # which training chunks --train-size keeps
    EVAL_ROWS = 0xE201  # which held-out chunks --eval-size keeps
    TRAIN_ORDER = 0x7002  # the order of training chunks in each epoch
    TRAIN_MASKS = 0x7003  # masks of an in-memory step's global batch
    EVAL_MASKS = 0xE003  # the evaluation masks, drawn once
    STREAM_HELD_OUT = 0x5E01  # which streamed documents are held out (a hash, not a generator)
    STREAM_SHUFFLE = 0x5E02  # a streamed process's shuffle buffer
    STREAM_MASKS = 0x5E03  # masks of a streamed process's batch
    PROBES = 0xC0DE  # the report's default fill-mask probes
    BOOTSTRAP = 0xB007  # resampling held-out documents for confidence intervals
    PROBE_ROWS = 0x9201  # which labelled rows a probe uses (--max-rows)
    PROBE_SPLIT = 0x9202  # a probe's k-fold split, one per probe seed (repeat)
    FINETUNE_ORDER = 0x9203  # the order of a fine-tuned probe's training rows, per probe seed
    REPLAY_ROWS = 0x7E01  # which general-text chunks --replay-ratio mixes into training


def generator(seed: int, salt: Salt, *indices: int) -> np.random.Generator:
    """The generator of stream ``salt`` at coordinate ``indices`` (epoch, step, rank, ...)."""
    return np.random.default_rng([seed, int(salt), len(indices), *indices])
