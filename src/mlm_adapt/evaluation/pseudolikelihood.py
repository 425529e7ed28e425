"""Pseudo-log-likelihood (PLL): every token masked in turn, so no random masks are involved.

Salazar et al. 2020 ("Masked Language Model Scoring") score a text by masking each token
once and summing the log-probabilities of the originals. Kauf & Ivanova 2023 show that
this overrates words split into several tokens (the other pieces give the word away);
their PLL-word-l2r variant, the default here, also masks the tokens of the same word to
the *right* of the one being scored.

Each scored position becomes one copy of its row; copies are batched through
``models.masked_lm_nll``, so the sparse head predicts only the scored position. A row is
one text scored on its own (:func:`text_rows`: "[CLS] text [SEP]", as the papers and
minicons score sentences), so no context leaks in from a neighbouring document.
"""

from __future__ import annotations

import numpy as np
import torch

from mlm_adapt.data.chunking import NO_WORD, Chunks
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.modeling.objective import device_batch


def masked_copies(input_ids: np.ndarray, word_ids: np.ndarray, mask_id: int,
                  word_l2r: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One copy of a chunk per scored (non-special) position, that position masked (with
    ``word_l2r``, its word's later tokens too) and labelled; returns (inputs, labels)."""
    positions = np.nonzero(word_ids >= 0)[0]
    rows = np.arange(len(positions))
    length = len(input_ids)
    masked = np.zeros((len(positions), length), dtype=bool)
    masked[rows, positions] = True
    if word_l2r:
        same_word = word_ids[None, :] == word_ids[positions][:, None]
        masked |= same_word & (np.arange(length)[None, :] > positions[:, None])
    inputs = np.where(masked, mask_id, input_ids[None, :])
    labels = np.full((len(positions), length), IGNORE_INDEX, dtype=input_ids.dtype)
    labels[rows, positions] = input_ids[positions]
    return inputs, labels


@torch.inference_mode()
def pseudo_token_nll(objective, chunks: Chunks, mask_id: int, device, batch_size: int = 64,
                     word_l2r: bool = True) -> np.ndarray:
    """Each scored token's negative pseudo-log-likelihood, shaped as ``chunks.input_ids``
    (float64, zero at special positions): its sum over the scored count is the log of the
    pseudo-perplexity; intervals resample it by document (``intervals.pieces``)."""
    objective.eval()
    token_nll = np.zeros(chunks.input_ids.shape, dtype=np.float64)
    pending: list[tuple[np.ndarray, ...]] = []
    scores: list[tuple[np.ndarray, np.ndarray, torch.Tensor]] = []  # read once at the end: no sync per batch
    for row in range(len(chunks)):
        inputs, labels = masked_copies(chunks.input_ids[row], chunks.word_ids[row], mask_id, word_l2r)
        attention = np.repeat(chunks.attention_mask[row][None, :], len(inputs), axis=0)
        scored = np.flatnonzero(chunks.word_ids[row] >= 0)  # each copy's labelled position, in order
        pending.append((inputs, attention, labels, np.full(len(scored), row), scored))
        if sum(len(p[0]) for p in pending) >= batch_size or row == len(chunks) - 1:
            *joined, rows, positions = [np.concatenate(part) for part in zip(*pending)]
            for start in range(0, len(rows), batch_size):
                part = slice(start, start + batch_size)
                batch = device_batch(tuple(a[part] for a in joined), torch.device(device), getattr(objective, "varlen_separator", None))
                nll, _ = objective(**batch, per_row=True)  # one labelled token a copy
                scores.append((rows[part], positions[part], nll))
            pending = []
    for rows, positions, nll in scores:
        token_nll[rows, positions] = nll.cpu().double().numpy()  # MPS has no float64
    return token_nll


def text_rows(tokenizer, texts: list[str], max_length: int) -> Chunks:
    """Each text as one row of its own, "[CLS] text [SEP]" (truncated to ``max_length``
    tokens), padded to the longest: word ids from the tokenizer (``NO_WORD`` at special and
    pad positions), and each row's text number as its document (what intervals resample)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    longest = max(len(ids) for ids in encoded["input_ids"])
    shape = (len(texts), longest)
    input_ids = np.full(shape, tokenizer.pad_token_id, dtype=np.int64)
    attention, words = np.zeros(shape, dtype=np.int64), np.full(shape, NO_WORD, dtype=np.int64)
    for row, ids in enumerate(encoded["input_ids"]):
        input_ids[row, :len(ids)], attention[row, :len(ids)] = ids, 1
        words[row, :len(ids)] = [NO_WORD if w is None else w for w in encoded.word_ids(row)]
    return Chunks(input_ids, attention, words, np.repeat(np.arange(len(texts))[:, None], longest, axis=1))
