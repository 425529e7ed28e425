"""The domain-adaptation run: one training loop, readable top to bottom.

Shape of a step (torchtune-style): the global batch of ``batch_size x grad_accum x
processes`` chunks is masked at once from a generator seeded by (seed, epoch,
step), so the masks do not depend on how many processes share the work or on
where a run was resumed. Each process backpropagates its micro-batches' *summed*
masked-token NLL divided by the global batch's masked-token count: the gradient
is that of the mean loss per masked token, however tokens fall across micro-
batches and processes.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mlm_adapt import artifacts, config as config_mod
from mlm_adapt.chunking import Chunks, SplitData, load_split
from mlm_adapt.config import EvalConfig, TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation import EvalResult, MaskedSet, evaluate_loss, mask_eval_set
from mlm_adapt.masking import TRAIN_STREAM, MaskingVocab, batch_generator, mask_batch
from mlm_adapt.models import MaskedLMObjective, load_model, load_tokenizer, max_chunk_size, supports_sparse_prediction
from mlm_adapt.runtime import make_accelerator

log = logging.getLogger("mlm_adapt")

# Throughput leaves out the first optimizer steps, which pay for allocator warm-up
# and one-off kernel selection.
WARMUP_STEPS_NOT_TIMED = 2


@dataclass
class Prepared:
    """Everything a run or an evaluation needs before the first forward pass."""

    model: torch.nn.Module
    tokenizer: Any
    data: SplitData
    eval_set: MaskedSet
    vocab: MaskingVocab


def prepare(config: EvalConfig) -> Prepared:
    """Load model and tokenizer, build the chunks and the once-masked evaluation set."""
    # Seeds torch before loading: a checkpoint without an MLM head gets a random one,
    # and dropout draws from the same generator during training.
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    data = load_split(config.data, tokenizer, config.seed, max_chunk_size(model.config, tokenizer))
    vocab = MaskingVocab.from_tokenizer(tokenizer)
    eval_set = mask_eval_set(data.eval, config.masking, vocab, config.seed)
    return Prepared(model, tokenizer, data, eval_set, vocab)


def evaluate(config: EvalConfig) -> EvalResult:
    """Perplexity of ``config.model`` on the held-out chunks a ``train`` run with these options used."""
    prepared = prepare(config)
    accelerator, _ = make_accelerator(config.precision)
    objective = accelerator.prepare(MaskedLMObjective(prepared.model))
    return evaluate_loss(objective, prepared.eval_set, config.batch_size, accelerator)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # As in BERT and the HF Trainer: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _global_batch(chunks: Chunks, order: np.ndarray, step: int, size: int, config: TrainConfig, vocab: MaskingVocab, epoch: int):
    """The step's rows of ``order``, masked as one batch with the step's own generator."""
    rows = order[step * size : (step + 1) * size]
    part = chunks.select(rows)
    inputs, labels = mask_batch(
        part.input_ids,
        part.word_ids,
        scheme=config.masking.masking,
        prob=config.masking.train_mask_prob(),
        vocab=vocab,
        rng=batch_generator(config.seed, TRAIN_STREAM, epoch, step),
    )
    return inputs, part.attention_mask, labels


@dataclass
class RunState:
    step: int = 0
    history: list[dict] = field(default_factory=list)
    log_history: list[dict] = field(default_factory=list)
    timed_from: float | None = None
    timed_samples: int = 0


def _train_step(objective, optimizer, scheduler, accelerator, batch, config: TrainConfig) -> tuple[float, int]:
    """One optimizer step on this process's micro-batches; returns the global (nll sum, token count)."""
    inputs, attention, labels = batch
    world, rank = accelerator.num_processes, accelerator.process_index
    global_count = int((labels != -100).sum())
    micro = np.array_split(np.arange(len(inputs)), config.grad_accum * world)[rank::world]
    local_nll = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for k, rows in enumerate(micro):
        if len(rows) == 0:
            continue
        tensors = [torch.from_numpy(a[rows]).to(accelerator.device) for a in (inputs, attention, labels)]
        sync = nullcontext() if k == len(micro) - 1 else accelerator.no_sync(objective)
        with sync:
            nll, _ = objective(*tensors)
            # DDP averages gradients over processes; scaling by `world` turns that
            # average back into the sum over the global batch, then / token count.
            accelerator.backward(nll * world / max(global_count, 1))
        local_nll += nll.detach().double()
    accelerator.clip_grad_norm_(objective.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(accelerator.reduce(local_nll, "sum")), global_count


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise MlmAdaptError(
            f"the training loss became {loss} at step {step}; lower --lr, or use --precision fp32 to rule out overflow"
        )


def train(config: TrainConfig) -> dict[str, Any]:
    """Adapt ``config.model`` to ``config.data``; save the model and return its metrics."""
    output = artifacts.prepare_output(config.output, config.overwrite)
    prepared = prepare(config)
    accelerator, precision = make_accelerator(config.precision)
    model, train_chunks = prepared.model, prepared.data.train
    world = accelerator.num_processes
    global_size = config.batch_size * config.grad_accum * world
    steps_per_epoch = config.steps_per_epoch(len(train_chunks), world)
    total_steps = config.total_steps(len(train_chunks), world)

    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps(len(train_chunks), world), total_steps)
    objective, optimizer = accelerator.prepare(MaskedLMObjective(model), optimizer)

    before = evaluate_loss(objective, prepared.eval_set, config.batch_size, accelerator)
    log.info("perplexity before training: %.3f on %d masked tokens", before.perplexity, before.masked_tokens)
    state = RunState()
    started = time.perf_counter()
    bar = tqdm(total=total_steps, desc="training", unit="step", disable=not accelerator.is_main_process)
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        order = batch_generator(config.seed, TRAIN_STREAM, epoch).permutation(len(train_chunks))
        epoch_nll, epoch_tokens = 0.0, 0
        for step_in_epoch in range(steps_per_epoch):
            if state.step >= total_steps:
                break
            batch = _global_batch(train_chunks, order, step_in_epoch, global_size, config, prepared.vocab, epoch)
            nll, tokens = _train_step(objective, optimizer, scheduler, accelerator, batch, config)
            state.step += 1
            _check_finite(nll, state.step)
            epoch_nll, epoch_tokens = epoch_nll + nll, epoch_tokens + tokens
            _record_step(state, config, nll / max(tokens, 1), scheduler.get_last_lr()[0], len(batch[0]))
            bar.update(1)
            bar.set_postfix(loss=f"{nll / max(tokens, 1):.3f}")
        result = evaluate_loss(objective, prepared.eval_set, config.batch_size, accelerator)
        state.history.append(_epoch_entry(epoch, state.step, steps_per_epoch, epoch_nll, epoch_tokens, result))
        log.info("epoch %s: train loss %.4f, eval loss %.4f, perplexity %.3f", *_epoch_summary(state.history[-1]))
    bar.close()
    metrics = _metrics(config, prepared, before, result, state, precision, time.perf_counter() - started, model)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        artifacts.save_final(
            output, accelerator.unwrap_model(objective).model, prepared.tokenizer, metrics,
            write_extra=lambda folder: config_mod.write_yaml(config, folder / "config.yaml"),
        )
    return metrics


def _record_step(state: RunState, config: TrainConfig, loss: float, lr: float, samples: int) -> None:
    if state.step == WARMUP_STEPS_NOT_TIMED:
        state.timed_from = time.perf_counter()
    elif state.step > WARMUP_STEPS_NOT_TIMED:
        state.timed_samples += samples
    if state.step % config.logging_steps == 0 or state.step == 1:
        state.log_history.append({"step": state.step, "loss": loss, "lr": lr})


def _epoch_entry(epoch: int, step: int, steps_per_epoch: int, nll: float, tokens: int, result: EvalResult) -> dict:
    done = step - epoch * steps_per_epoch
    return {
        "epoch": epoch + 1 if done == steps_per_epoch else round(epoch + done / steps_per_epoch, 4),
        "step": step,
        "train_loss": nll / tokens if tokens else None,
        "eval_loss": result.loss,
        "perplexity": result.perplexity,
    }


def _epoch_summary(entry: dict) -> tuple:
    return entry["epoch"], entry["train_loss"] or float("nan"), entry["eval_loss"], entry["perplexity"]


def _throughput(state: RunState, elapsed: float, total_samples: int) -> float:
    if state.timed_from is not None and state.timed_samples:
        return state.timed_samples / (time.perf_counter() - state.timed_from)
    return total_samples / elapsed if elapsed > 0 else 0.0


def _metrics(config, prepared: Prepared, before: EvalResult, after: EvalResult, state: RunState,
             precision: str, elapsed: float, model) -> dict[str, Any]:
    return {
        "model": config.model.model,
        "data": config.data.data,
        "perplexity_before": before.perplexity,
        "perplexity_after": after.perplexity,
        "eval_loss_before": before.loss,
        "eval_loss_after": after.loss,
        "eval_masked_tokens": after.masked_tokens,
        "train_chunks": len(prepared.data.train),
        "eval_chunks": len(prepared.data.eval),
        "eval_documents": prepared.data.eval_documents,
        "documents": prepared.data.documents,
        "steps": state.step,
        "train_samples_per_second": _throughput(state, elapsed, state.step * config.batch_size * config.grad_accum),
        "train_runtime_seconds": elapsed,
        "precision": precision,
        "sparse_prediction": supports_sparse_prediction(model),
        "history": state.history,
        "log_history": state.log_history,
    }
