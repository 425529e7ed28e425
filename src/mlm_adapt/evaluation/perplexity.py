"""Perplexity on the held-out set whose masks are drawn once (``data.held_out``).

Perplexity is ``exp(total masked-token NLL / number of masked tokens)``. The seed
notebooks' ``exp(mean of batch losses)`` over-weights batches with few masked tokens
(and one even repeats the last, smaller batch's loss to full batch size). Every result
keeps its per-document pieces, which the intervals resample (``intervals``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mlm_adapt.data.held_out import MaskedSet
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.evaluation.intervals import interval_caveat, perplexity_interval, pieces
from mlm_adapt.evaluation.vocabulary import bits_per_byte
from mlm_adapt.modeling.objective import device_batch
from mlm_adapt.modeling.preparation import Prepared
from mlm_adapt.system.runtime import accumulation_dtype


@dataclass(frozen=True)
class EvalResult:
    """An evaluation's totals, and the NLL and masked-token count of each piece of a
    held-out chunk that one document's text fills (``pieces``): a chunk cut across two
    documents is two pieces. Without documents a piece is a whole chunk. The intervals
    resample the pieces' documents."""

    nll_sum: float
    masked_tokens: int
    masked_bytes: int = 0
    piece_nll: np.ndarray | None = field(default=None, compare=False, repr=False)
    piece_tokens: np.ndarray | None = field(default=None, compare=False, repr=False)
    piece_documents: np.ndarray | None = field(default=None, compare=False, repr=False)
    piece_rows: np.ndarray | None = field(default=None, compare=False, repr=False)  # each piece's chunk
    # Each masked token's NLL, shaped as the held-out set's labels (``token_nll``): what the
    # word ledger attributes to words, kept so that a run need not score its models again.
    token_nll: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_tokens(cls, token_nll: np.ndarray, scored: np.ndarray, documents: np.ndarray | None,
                    masked_bytes: int = 0) -> "EvalResult":
        """The result of per-position NLLs ``token_nll`` at the ``scored`` positions of
        held-out chunks whose positions belong to ``documents`` (``Chunks.documents``)."""
        nll, tokens, owners, rows = pieces(token_nll, scored, documents)
        return cls(float(nll.sum()), int(tokens.sum()), masked_bytes, nll, tokens, owners, rows, token_nll)

    def interval(self, seed: int) -> tuple[float, float]:
        """95% bootstrap interval of the perplexity, resampling held-out documents."""
        return perplexity_interval(self.piece_nll, self.piece_tokens, seed, groups=self.piece_documents)

    def by_row(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(NLL, masked tokens, a document) of each of the ``rows`` held-out chunks: the
        pieces summed per chunk, each chunk counted for its last piece's document (a chunk
        with nothing masked for the chunk's before it: held-out rows run in stream order)."""
        documents = None
        if self.piece_documents is not None:
            documents = np.full(rows, -1, dtype=np.int64)
            documents[self.piece_rows] = self.piece_documents  # in row order: the last piece's stays
            documents = np.maximum.accumulate(documents)
        return (np.bincount(self.piece_rows, self.piece_nll, minlength=rows),
                np.bincount(self.piece_rows, self.piece_tokens, minlength=rows), documents)

    @property
    def loss(self) -> float:
        return self.nll_sum / self.masked_tokens if self.masked_tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """The same NLL per byte of masked text: comparable across tokenizations (added tokens)."""
        return bits_per_byte(self.nll_sum, self.masked_bytes)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll_sum, self.masked_tokens)


def perplexity(nll_sum: float, masked_tokens: int) -> float:
    """exp of the mean NLL per masked token; ``inf`` where that overflows."""
    if masked_tokens <= 0:
        return float("nan")
    try:
        return math.exp(nll_sum / masked_tokens)
    except OverflowError:
        return float("inf")


def evaluate_loss(objective, masked: MaskedSet, batch_size: int, accelerator) -> EvalResult:
    """Summed NLL and masked-token count over ``masked``, each process taking its share of
    rows; with each piece's NLL (:func:`pieces`) for :func:`perplexity_interval`."""
    per_token = token_nll(objective, masked, batch_size, accelerator)
    return EvalResult.from_tokens(per_token, masked.labels != IGNORE_INDEX, masked.documents, masked.masked_bytes)


@torch.inference_mode()
def token_nll(objective, masked: MaskedSet, batch_size: int, accelerator) -> np.ndarray:
    """Each masked token's NLL, shaped as ``masked.labels`` (zero where nothing is masked),
    gathered from every process's share of the rows."""
    was_training = objective.training
    objective.eval()
    shard = score_shard(objective, masked, batch_size, accelerator)
    objective.train(was_training)
    gathered = accelerator.gather(shard).cpu().double().numpy()  # the one read of the values
    return gathered[~np.isnan(gathered).all(axis=1)]  # a real row holds zeros where nothing is masked


def score_shard(objective, masked: MaskedSet, batch_size: int, accelerator) -> torch.Tensor:
    """Each masked token's NLL over this process's share of ``masked``'s rows, on the device
    and never read there (no host sync), padded with NaN rows to the largest share's size
    so that every process gathers one shape."""
    shards = np.array_split(np.arange(len(masked)), accelerator.num_processes)
    rows = shards[accelerator.process_index]
    token_nll = torch.full((len(shards[0]), masked.labels.shape[1]), float("nan"),
                           dtype=accumulation_dtype(accelerator.device), device=accelerator.device)
    varlen = accelerator.unwrap_model(objective).varlen_separator
    # Every process runs as many forward passes as the largest shard needs: a wrapped
    # model's forward can be collective (DDP broadcasts buffers, FSDP gathers weights).
    # A process out of rows repeats row 0 with every label ignored.
    for start in range(0, len(shards[0]), batch_size):
        real = rows[start : start + batch_size]
        labels = masked.labels[real] if len(real) else np.full_like(masked.labels[:1], IGNORE_INDEX)
        batch = real if len(real) else np.zeros(1, dtype=np.int64)
        # The training step's copy: pinned and asynchronous on a GPU, masked positions found on the host.
        inputs = device_batch((masked.input_ids[batch], masked.attention_mask[batch], labels), accelerator.device, varlen)
        nll, _ = objective(**inputs, per_token=True)
        token_nll[start : start + len(real)] = nll[: len(real)].to(token_nll.dtype)
    return token_nll


def resampled_units(result: EvalResult) -> str:
    """What :func:`perplexity_interval` resamples for ``result``: "N documents" or "N chunks"."""
    documents = 0 if result.piece_documents is None else len(np.unique(result.piece_documents))
    return f"{documents} documents" if documents >= 2 else f"{len(result.piece_nll)} chunks"  # one document: a piece a chunk


def comparison_summary(base: EvalResult, model: EvalResult, seed: int) -> dict[str, Any]:
    """``evaluate --compare``'s verdict: the perplexity ratio model / base on the same tokens
    and masks, with the interval that resamples the same documents for both (the run's own
    ``perplexity_change_interval`` when ``base`` is its base model)."""
    low, high = perplexity_interval(model.piece_nll, model.piece_tokens, seed, groups=model.piece_documents,
                                    baseline=base.piece_nll)
    resamples = resampled_units(model)
    return {"ratio": model.perplexity / base.perplexity, "interval": [low, high],
            "significant": _verdict(low, high, resamples), "base_perplexity": base.perplexity,
            "interval_resamples": resamples, "interval_caveat": interval_caveat(resamples)}


def evaluation_summary(result: EvalResult, seed: int) -> dict[str, Any]:
    """What ``mlm-adapt evaluate`` reports: perplexity with its 95% interval (seeded as a
    run's, so it equals the run's ``perplexity_after_interval``), loss, tokens and bytes."""
    resamples = resampled_units(result)
    return {"perplexity": result.perplexity, "perplexity_interval": list(result.interval(seed)),
            "interval_resamples": resamples, "interval_caveat": interval_caveat(resamples), "eval_loss": result.loss,
            "masked_tokens": result.masked_tokens, "bits_per_byte": result.bits_per_byte,
            "masked_bytes": result.masked_bytes}


def pseudo_summary(result: EvalResult, seed: int) -> dict[str, Any]:
    """What ``mlm-adapt evaluate --pseudo`` reports: pseudo-perplexity with its 95% interval."""
    resamples = resampled_units(result)
    return {"pseudo_perplexity": result.perplexity, "pseudo_perplexity_interval": list(result.interval(seed)),
            "interval_resamples": resamples, "interval_caveat": interval_caveat(resamples), "pseudo_nll": result.loss,
            "scored_tokens": result.masked_tokens}


def evaluate_sets(objective, prepared: Prepared, batch_size: int, accelerator) -> dict[str, EvalResult]:
    """The domain's held-out set ("eval") and, with --general-data, the general one."""
    results = {"eval": evaluate_loss(objective, prepared.eval_set, batch_size, accelerator)}
    if prepared.general_set is not None:
        results["general"] = evaluate_loss(objective, prepared.general_set, batch_size, accelerator)
    return results


def evaluation_record(results: dict[str, EvalResult], seed: int, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """One evaluation as JSON-ready keys: per set (``general_`` prefix for the general one)
    the NLL sum, masked tokens, loss, perplexity and its 95% interval, and its NLL per
    piece (``piece_nll``, :func:`pieces`); given the record before training, the interval
    of each set's perplexity ratio now / before, resampling the same documents together."""
    record: dict[str, Any] = {}
    for name, result in results.items():
        prefix = "" if name == "eval" else f"{name}_"
        record |= {f"{prefix}eval_loss": result.loss, f"{prefix}eval_nll_sum": result.nll_sum,
                   f"{prefix}eval_masked_tokens": result.masked_tokens, f"{prefix}perplexity": result.perplexity,
                   f"{prefix}perplexity_interval": list(result.interval(seed)),
                   f"{prefix}interval_resamples": resampled_units(result)}
        if before is None:  # the start: its pieces are what later evaluations are paired with
            record[f"{prefix}piece_nll"] = result.piece_nll.tolist()
        elif f"{prefix}piece_nll" in before:
            record[f"{prefix}perplexity_change_interval"] = list(perplexity_interval(
                result.piece_nll, result.piece_tokens, seed, groups=result.piece_documents,
                baseline=np.asarray(before[f"{prefix}piece_nll"], dtype=np.float64)))
        elif f"{prefix}row_nll" in before:  # a checkpoint from before pieces: its NLL per chunk
            baseline = np.asarray(before[f"{prefix}row_nll"], dtype=np.float64)
            nll, tokens, documents = result.by_row(len(baseline))
            record[f"{prefix}perplexity_change_interval"] = list(perplexity_interval(
                nll, tokens, seed, groups=documents, baseline=baseline))
    return record


def before_after(before: dict[str, Any], after: dict[str, Any], masked_bytes: int) -> dict[str, Any]:
    """metrics.json's comparison of two ``evaluation_record``s."""
    low, high = after["perplexity_change_interval"]
    resamples = after.get("interval_resamples", "0 chunks")  # checkpoints before it resampled chunks
    metrics = {
        "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
        "perplexity_before_interval": before["perplexity_interval"], "perplexity_after_interval": after["perplexity_interval"],
        # Resampling the same documents before and after: does the ratio's interval leave out 1?
        # No verdict (None) from an interval over too few documents (intervals.interval_caveat).
        "perplexity_change_interval": [low, high], "change_exceeds_noise": _verdict(low, high, resamples),
        "interval_resamples": resamples, "interval_caveat": interval_caveat(resamples),
        "eval_loss_before": before["eval_loss"], "eval_loss_after": after["eval_loss"],
        "eval_masked_tokens": after["eval_masked_tokens"],
        # Per byte of masked text: what compares runs whose tokenizations differ (--add-tokens).
        "bits_per_byte_before": bits_per_byte(before["eval_nll_sum"], masked_bytes),
        "bits_per_byte_after": bits_per_byte(after["eval_nll_sum"], masked_bytes),
        "eval_masked_bytes": masked_bytes,
    }
    if "general_perplexity" in after:
        metrics |= {"general_perplexity_before": before["general_perplexity"], "general_perplexity_after": after["general_perplexity"],
                    "general_perplexity_before_interval": before["general_perplexity_interval"],
                    "general_perplexity_after_interval": after["general_perplexity_interval"],
                    "general_eval_masked_tokens": after["general_eval_masked_tokens"],
                    "general_interval_resamples": after.get("general_interval_resamples", "0 chunks")}
        metrics["general_interval_caveat"] = interval_caveat(metrics["general_interval_resamples"])
        if "general_perplexity_change_interval" in after:  # absent in checkpoints made before it existed
            low, high = after["general_perplexity_change_interval"]
            metrics |= {"general_perplexity_change_interval": [low, high],
                        "general_change_exceeds_noise": _verdict(low, high, metrics["general_interval_resamples"])}
    return metrics


def _verdict(low: float, high: float, resamples: str) -> bool | None:
    """Whether a ratio's interval leaves out 1; None where the interval cannot carry a verdict."""
    return None if interval_caveat(resamples) else not (low <= 1.0 <= high)
