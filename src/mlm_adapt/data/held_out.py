"""The held-out chunks, masked once: what every perplexity of a run is measured on.

The evaluation chunks are masked a single time from a generator seeded by the run seed
(re-masking at every evaluation, as one of the seed notebooks did, makes before/after
numbers incomparable), and the same masked set serves before training, after every
evaluation and after training, and in ``mlm-adapt evaluate`` later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlm_adapt.config import MaskingConfig
from mlm_adapt.data.chunking import Chunks
from mlm_adapt.data.masking import IGNORE_INDEX, MaskingVocab, mask_batch
from mlm_adapt.data.seeding import Salt, generator


@dataclass(frozen=True)
class MaskedSet:
    """Evaluation inputs with their fixed masks."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    masked_bytes: int = 0  # UTF-8 bytes of text under the masks (tokenization.token_bytes)
    documents: np.ndarray | None = None  # each position's document (Chunks.documents): what intervals resample

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def masked_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def mask_eval_set(chunks: Chunks, masking: MaskingConfig, vocab: MaskingVocab, seed: int,
                  byte_counts: np.ndarray | None = None) -> MaskedSet:
    """Mask ``chunks`` once, reproducibly: same chunks, tokenizer and seed give the same set.
    ``byte_counts[id]`` (``tokenization.token_bytes``) counts the masked text's bytes."""
    inputs, labels = mask_batch(
        chunks.input_ids,
        chunks.word_ids,
        scheme=masking.eval_masking,
        prob=masking.eval_mask_prob,
        vocab=vocab,
        rng=generator(seed, Salt.EVAL_MASKS),
    )
    masked_bytes = int(byte_counts[labels[labels != IGNORE_INDEX]].sum()) if byte_counts is not None else 0
    return MaskedSet(inputs, chunks.attention_mask, labels, masked_bytes, chunks.documents)
