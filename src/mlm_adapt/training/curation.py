"""``mlm-adapt select``: the data of curated task-adaptive pretraining (Gururangan et al.,
"Don't Stop Pretraining", ACL 2020, section 5): the documents of a large pool that lie
nearest a task's texts, to adapt on with the task's own texts or instead of them.

Nearness is the cosine similarity of a model's mean-pooled embeddings (the probe's,
``embeddings.embed``), searched in an exact inner-product index (faiss ``IndexFlatIP``) of
the task's normalised vectors: each pool document scores its best similarity to any task
text, which merges every task text's nearest neighbours by their best score. The pool is
read in batches (as a stream with ``--streaming``) and only the running ``top`` candidates
are kept, so memory does not grow with the pool. A document that copies a task text,
exactly or nearly (``data.duplicates.CopyFinder``, MinHash), is never picked: adapting on
it would put the task's test texts into training.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mlm_adapt.config import SelectConfig
from mlm_adapt.data.corpus import Corpus, load_corpus
from mlm_adapt.data.duplicates import CopyFinder
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation.embeddings import embed

log = logging.getLogger("mlm_adapt")

POOL_BATCH = 64  # pool documents read, screened and embedded at a time


class Leaders:
    """The ``size`` best-scoring texts seen so far; ties go to the earlier text."""

    def __init__(self, size: int):
        self.size = size
        self.scores = np.zeros(0, dtype=np.float32)
        self.order = np.zeros(0, dtype=np.int64)  # each kept text's place in the pool
        self.texts: list[str] = []

    def offer(self, scores: np.ndarray, order: np.ndarray, texts: list[str]) -> None:
        scores, order = np.concatenate([self.scores, scores]), np.concatenate([self.order, order])
        texts = self.texts + texts
        best = np.lexsort((order, -scores))[: self.size]  # by score, then pool order
        self.scores, self.order, self.texts = scores[best], order[best], [texts[i] for i in best]


def select(config: SelectConfig) -> dict[str, Any]:
    """Pick ``config.top`` documents of ``config.pool`` nearest ``config.like``'s texts; write
    them to ``config.output`` (nearest first) and return what ``select --json`` prints."""
    import faiss

    from mlm_adapt.modeling.loading import load_model, load_tokenizer

    began = time.perf_counter()
    try:
        task = [t for batch in load_corpus(config.like).batches() for t in batch if t.strip()]
    except MlmAdaptError as exc:  # the reader's messages name --data and --text-column
        raise MlmAdaptError(f"--like: {str(exc).replace('--text-column', '--like-text-column')}") from None
    if not task:
        raise MlmAdaptError(f"--like {config.like.data}: no text to be like (every row of {config.like.text_column!r} is empty)")
    pool = load_corpus(config.pool)
    level = log.level
    log.setLevel(logging.ERROR)  # an encoder without an MLM head is fine here: only its states are read
    try:
        model, tokenizer = load_model(config.model), load_tokenizer(config.model)
    finally:
        log.setLevel(level)
    vectors = _unit(embed(model, tokenizer, task, config.max_length, config.batch_size, config.precision))
    index = faiss.IndexFlatIP(vectors.shape[1])  # exact: inner products of unit vectors are cosines
    index.add(vectors)
    copies = CopyFinder(task)
    leaders, documents, excluded = Leaders(config.top), 0, 0
    with tqdm(total=len(pool) if isinstance(pool, Corpus) else None, desc="selecting", unit="doc") as bar:
        for batch in pool.batches(POOL_BATCH):
            texts = [t for t in batch if t.strip()]
            copied = copies.copies(texts)
            kept = [t for t, c in zip(texts, copied) if not c]
            if kept:
                scores, _ = index.search(_unit(embed(model, tokenizer, kept, config.max_length, config.batch_size,
                                                     config.precision)), 1)
                leaders.offer(scores[:, 0], documents + np.flatnonzero(~copied), kept)
            documents, excluded = documents + len(texts), excluded + int(copied.sum())
            bar.update(len(batch))
    _check_enough(config, documents, excluded)
    _write(config, leaders)
    return {"selected": len(leaders.texts), "pool_documents": documents, "excluded_duplicates": excluded,
            "like_texts": len(task), "lowest_score": float(leaders.scores[-1]), "highest_score": float(leaders.scores[0]),
            "output": str(config.output), "seconds": time.perf_counter() - began}


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32, as faiss takes them); a zero row stays zero."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _check_enough(config: SelectConfig, documents: int, excluded: int) -> None:
    if documents == 0:
        raise MlmAdaptError(f"--pool {config.pool.data}: the pool is empty (no document holds any text)")
    if documents - excluded < config.top:
        copied = f" ({excluded} more copy task texts and are never picked)" if excluded else ""
        raise MlmAdaptError(f"--top {config.top} is more than the {documents - excluded} documents of --pool "
                            f"{config.pool.data}{copied}: lower --top")


def _write(config: SelectConfig, leaders: Leaders) -> None:
    """The picked documents as JSON lines, nearest first, written whole or not at all."""
    config.output.parent.mkdir(parents=True, exist_ok=True)
    staging = config.output.with_name(f".{config.output.name}.{os.getpid()}.tmp")
    with staging.open("w", encoding="utf-8") as fh:
        for text, score in zip(leaders.texts, leaders.scores):
            fh.write(json.dumps({"text": text, "score": round(float(score), 6)}) + "\n")
    os.replace(staging, config.output)
