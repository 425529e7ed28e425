"""Seeded, pure masking of chunks for the masked-LM objective.

Both schemes choose positions, then apply BERT's 80/10/10 rule to each chosen
token: 80% become the mask token, 10% a random vocabulary token, 10% stay. Labels
are the original ids at chosen positions and -100 everywhere else (the bug in the
seeds' whole-word collator, which kept every label, is what this guards against).

Randomness comes only from the ``numpy.random.Generator`` passed in, so the same
generator state always gives the same masks. Callers derive it with
``seeding.generator`` from (seed, epoch, step), which is what makes a resumed run
draw the masks an uninterrupted one would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1


@dataclass(frozen=True)
class MaskingVocab:
    """What masking needs to know of a tokenizer."""

    mask_token_id: int
    replacement_ids: np.ndarray  # non-special token ids a "random token" is drawn from

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "MaskingVocab":
        special = set(tokenizer.all_special_ids)
        ids = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)
        return cls(int(tokenizer.mask_token_id), ids)


def choose_tokens(special: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Each non-special position independently with probability ``prob``."""
    return (rng.random(special.shape) < prob) & ~special


def choose_words(word_ids: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Each word (all of its tokens) independently with probability ``prob``.

    ``word_ids`` is ``[rows, length]`` with -1 at special positions; ids need only
    be unique per word within a row.
    """
    special = word_ids < 0
    chosen = np.zeros(word_ids.shape, dtype=bool)
    if special.all():
        return chosen
    # One key per (row, word), so equal word ids in different rows stay different words.
    words = word_ids[~special]
    span = int(words.max() - words.min()) + 1
    rows = np.nonzero(~special)[0]
    _, word_index = np.unique(rows * span + (words - words.min()), return_inverse=True)
    drawn = rng.random(int(word_index.max()) + 1) < prob
    chosen[~special] = drawn[word_index]
    return chosen


def apply_masks(
    input_ids: np.ndarray, chosen: np.ndarray, vocab: MaskingVocab, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 corruption of the ``chosen`` positions; returns new (inputs, labels)."""
    labels = np.where(chosen, input_ids, IGNORE_INDEX)
    inputs = input_ids.copy()
    roll = rng.random(input_ids.shape)
    to_mask = chosen & (roll < MASK_SHARE)
    to_random = chosen & (roll >= MASK_SHARE) & (roll < MASK_SHARE + RANDOM_SHARE)
    inputs[to_mask] = vocab.mask_token_id
    inputs[to_random] = rng.choice(vocab.replacement_ids, size=int(to_random.sum()))
    return inputs, labels


def mask_batch(
    input_ids: np.ndarray,
    word_ids: np.ndarray,
    *,
    scheme: str,
    prob: float,
    vocab: MaskingVocab,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask a batch of chunks by ``scheme`` ("token" or "whole-word"); returns (inputs, labels)."""
    if scheme == "whole-word":
        chosen = choose_words(word_ids, prob, rng)
    else:
        chosen = choose_tokens(word_ids < 0, prob, rng)
    return apply_masks(input_ids, chosen, vocab, rng)
