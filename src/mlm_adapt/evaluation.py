"""Perplexity on a held-out set whose masks are drawn once.

The evaluation chunks are masked a single time from a generator seeded by the run
seed (seed 002's point: re-masking at every evaluation makes before/after numbers
incomparable), and the same masked set serves before training, after every epoch
and after training, and in ``mlm-adapt evaluate`` later.

Perplexity is ``exp(total masked-token NLL / number of masked tokens)``. The
seeds' ``exp(mean of batch losses)`` over-weights batches with few masked tokens
(and seed 002 even repeats the last, smaller batch's loss to full batch size).

:func:`prepare` is what a run and ``mlm-adapt evaluate`` share: the same model
loading, the same held-out chunks and the same masks, which is why ``evaluate``
reproduces a run's ``perplexity_after``.
"""

from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from accelerate.utils import set_seed

from mlm_adapt.chunking import Chunks, frame_ids
from mlm_adapt.config import DataConfig, EvalConfig, MaskingConfig, ModelConfig
from mlm_adapt.data import SplitData, load_split, with_replay
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.intervals import interval_caveat, perplexity_interval, pieces
from mlm_adapt.models import MaskedLMObjective, check_packing, load_model, load_tokenizer, max_chunk_size
from mlm_adapt.optimizer_step import device_batch
from mlm_adapt.pseudolikelihood import pseudo_token_nll, text_rows
from mlm_adapt.runtime import accumulation_dtype, make_accelerator
from mlm_adapt.masking import IGNORE_INDEX, MaskingVocab, mask_batch
from mlm_adapt.seeding import Salt, generator
from mlm_adapt.vocabulary import bits_per_byte, token_bytes


@dataclass(frozen=True)
class MaskedSet:
    """Evaluation inputs with their fixed masks."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    masked_bytes: int = 0  # UTF-8 bytes of text under the masks (vocabulary.token_bytes)
    documents: np.ndarray | None = None  # each position's document (Chunks.documents): what intervals resample

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def masked_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


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

    @classmethod
    def from_tokens(cls, token_nll: np.ndarray, scored: np.ndarray, documents: np.ndarray | None,
                    masked_bytes: int = 0) -> "EvalResult":
        """The result of per-position NLLs ``token_nll`` at the ``scored`` positions of
        held-out chunks whose positions belong to ``documents`` (``Chunks.documents``)."""
        nll, tokens, owners, rows = pieces(token_nll, scored, documents)
        return cls(float(nll.sum()), int(tokens.sum()), masked_bytes, nll, tokens, owners, rows)

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


def mask_eval_set(chunks: Chunks, masking: MaskingConfig, vocab: MaskingVocab, seed: int,
                  byte_counts: np.ndarray | None = None) -> MaskedSet:
    """Mask ``chunks`` once, reproducibly: same chunks, tokenizer and seed give the same set.
    ``byte_counts[id]`` (``vocabulary.token_bytes``) counts the masked text's bytes."""
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


@torch.inference_mode()
def evaluate_loss(objective, masked: MaskedSet, batch_size: int, accelerator) -> EvalResult:
    """Summed NLL and masked-token count over ``masked``, each process taking its share of
    rows; with each piece's NLL (:func:`pieces`) for :func:`perplexity_interval`."""
    was_training = objective.training
    objective.eval()
    token_nll = score_shard(objective, masked, batch_size, accelerator)
    objective.train(was_training)
    gathered = accelerator.gather(token_nll).cpu().double().numpy()  # the one read of the values
    per_token = gathered[~np.isnan(gathered).all(axis=1)]  # a real row holds zeros where nothing is masked
    return EvalResult.from_tokens(per_token, masked.labels != IGNORE_INDEX, masked.documents, masked.masked_bytes)


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


@dataclass
class Prepared:
    """Everything a run or an evaluation needs before the first forward pass."""

    model: torch.nn.Module
    tokenizer: Any
    data: SplitData
    eval_set: MaskedSet
    vocab: MaskingVocab
    added: list = field(default_factory=list)  # vocabulary.AddedWord, with --add-tokens
    general_set: MaskedSet | None = None  # held-out general text (--general-data): forgetting
    separator: int | None = None  # with --packing: the token that ends each packed document

    def objective(self) -> MaskedLMObjective:
        return MaskedLMObjective(self.model, separator=self.separator)


def prepare(config: EvalConfig, accelerator=None, extend: Callable | None = None, general: DataConfig | None = None,
            replay_ratio: float | None = None) -> Prepared:
    """Load model and tokenizer, build the chunks and the once-masked evaluation set.
    ``extend(model, tokenizer) -> (model, tokenizer, added)`` changes the vocabulary first;
    ``general`` adds a second held-out set, masked the same way (the forgetting check), and
    with ``replay_ratio`` that share of the training chunks comes from its training side."""
    # Seeds torch before loading: a checkpoint without an MLM head gets a random one,
    # and dropout draws from the same generator during training.
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, packing=config.data.packing)
    if config.data.packing:  # before the data is tokenized
        check_packing(model.config, config.data.chunk_size)
    model, tokenizer, added = extend(model, tokenizer) if extend is not None else (model, tokenizer, [])
    # Under torchrun the main process tokenizes first and fills the cache; the others then read it.
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        data = load_split(config.data, tokenizer, config.seed, max_chunk_size(model.config, tokenizer))
        general_split = load_split(general, tokenizer, config.seed, max_chunk_size(model.config, tokenizer)) \
            if general is not None else None
    general_chunks = general_split.eval if general_split is not None else None
    if replay_ratio is not None:
        data = with_replay(data, general_split, replay_ratio, config.seed)
    vocab, byte_counts = MaskingVocab.from_tokenizer(tokenizer), token_bytes(tokenizer)
    eval_set = mask_eval_set(data.eval, config.masking, vocab, config.seed, byte_counts)
    general_set = mask_eval_set(general_chunks, config.masking, vocab, config.seed, byte_counts) \
        if general_chunks is not None else None
    separator = frame_ids(tokenizer)[1] if config.data.packing else None
    return Prepared(model, tokenizer, data, eval_set, vocab, added, general_set, separator)


def pseudo_perplexity(config: EvalConfig, max_texts: int = 100, word_l2r: bool = True) -> tuple[EvalResult, list[dict]]:
    """Pseudo-log-likelihood of ``config.model`` on up to ``max_texts`` texts, each scored on
    its own (``pseudolikelihood.text_rows``): the held-out documents a ``train`` run with
    these options uses (the first rows of a stream). Returns the pooled result (its interval
    resamples texts) and one ``{"index", "nll", "tokens"}`` per text, ``index`` its row in
    ``--data``. ``word_l2r``: PLL-word-l2r (Kauf & Ivanova 2023), else the original PLL."""
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    objective = accelerator.prepare(prepared.objective())
    rows, texts = held_out_texts(config.data, prepared.data.held_out, max_texts)
    chunks = text_rows(prepared.tokenizer, texts, config.data.chunk_size)
    token_nll = pseudo_token_nll(objective, chunks, prepared.tokenizer.mask_token_id, accelerator.device,
                                 config.batch_size, word_l2r)
    scored = chunks.word_ids >= 0
    per_text = [{"index": int(row), "nll": float(nll), "tokens": int(count)}
                for row, nll, count in zip(rows, token_nll.sum(axis=1), scored.sum(axis=1))]
    return EvalResult.from_tokens(token_nll, scored, chunks.documents), per_text


def held_out_texts(config: DataConfig, held_out: np.ndarray | None, limit: int) -> tuple[list[int], list[str]]:
    """(row in --data, text) of up to ``limit`` held-out documents, in order (a stream's
    first non-empty rows: its held-out set is chosen by hash while training)."""
    from mlm_adapt.corpus import numbered_documents

    wanted = None if held_out is None else set(held_out.tolist())
    chosen = ((row, text) for row, number, text in numbered_documents(config) if wanted is None or number in wanted)
    pairs = list(itertools.islice(chosen, limit))
    return [row for row, _ in pairs], [text for _, text in pairs]


def evaluate(config: EvalConfig) -> EvalResult:
    """Perplexity of ``config.model`` on the held-out chunks a ``train`` run with these options used."""
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    objective = accelerator.prepare(prepared.objective())
    return evaluate_loss(objective, prepared.eval_set, config.batch_size, accelerator)


def evaluate_against(config: EvalConfig, base: ModelConfig) -> tuple[EvalResult, EvalResult]:
    """``base`` and ``config.model`` on the same held-out chunks and masks (those a ``train``
    run with these options used, tokenized by ``config.model``'s tokenizer): (base, model).
    Refuses a base whose vocabulary differs: it could not score the same tokens."""
    base_tokenizer, tokenizer = load_tokenizer(base), load_tokenizer(config.model)
    if base_tokenizer.get_vocab() != tokenizer.get_vocab():  # before any data is read
        raise MlmAdaptError(
            f"--compare {base.model}: its vocabulary ({len(base_tokenizer)} tokens) differs from {config.model.model}'s "
            f"({len(tokenizer)}), so the two cannot score the same masked tokens; compare bits per byte of "
            "two `mlm-adapt evaluate` runs instead")
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    model = evaluate_loss(accelerator.prepare(prepared.objective()), prepared.eval_set, config.batch_size, accelerator)
    base_objective = MaskedLMObjective(load_model(base, packing=config.data.packing), separator=prepared.separator)
    before = evaluate_loss(accelerator.prepare(base_objective), prepared.eval_set, config.batch_size, accelerator)
    return before, model


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
