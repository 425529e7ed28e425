"""The optimizer step, shared by training, the demo's timing and the benchmark.

``train_step`` backpropagates the summed masked-token NLL of this process's
micro-batches divided by the masked-token count of the whole step over all
processes (torchtune-style): the gradient of the mean loss per masked token,
however tokens fall across micro-batches and processes.

It queues its work without reading any tensor's value on the host (on a GPU each
read waits for the GPU to catch up, leaving it idle while the host prepares the next
step): counts and masked positions come from the host's arrays, copies go through
pinned memory, and the loss comes back as a :class:`StepOutcome` read when the caller
chooses (the training loop: one step late). tests/test_optimizer_step.py checks it.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from mlm_adapt.config import TrainConfig
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.modeling.objective import MaskedLMObjective, device_batch, to_device
from mlm_adapt.system.runtime import accumulation_dtype, make_accelerator

log = logging.getLogger("mlm_adapt")

# Throughput leaves out the first optimizer steps of a process, which pay for
# allocator warm-up and one-off kernel selection.
WARMUP_STEPS_NOT_TIMED = 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # As in BERT and the HF Trainer: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass(frozen=True)
class StepOutcome:
    """A step's global masked-token NLL sum, masked-token count and chunk count. On a GPU
    they may still be being computed: :meth:`read` waits for the step to finish."""

    nll: torch.Tensor
    tokens: torch.Tensor | int
    chunks: torch.Tensor | int
    stop: torch.Tensor | bool = False  # whether any process asked to stop (SIGINT/SIGTERM) by this step

    def read(self) -> tuple[float, int, int]:
        return float(self.nll), int(self.tokens), int(self.chunks)

    def stop_requested(self) -> bool:
        return bool(self.stop)


def train_step(objective, optimizer, scheduler, accelerator, micro_batches: list, stop_requested: bool = False) -> StepOutcome:
    """One optimizer step on this process's micro-batches, queued without a host sync:
    counts come from the host arrays and the loss stays on the device until read.

    ``stop_requested``: this process was signalled. With several processes it joins the
    step's count reduction, so that every process learns, from the same step's outcome,
    that one of them was: they stop at the same step (a lone process stopping would leave
    the others waiting in the next all-reduce)."""
    world, device = accelerator.num_processes, accelerator.device
    tokens = sum(int(np.count_nonzero(labels != IGNORE_INDEX)) for *_, labels in micro_batches)
    chunks = sum(len(arrays[0]) for arrays in micro_batches)
    stop: torch.Tensor | bool = stop_requested
    if world > 1:  # the global counts and the stop request: one collective, left on the device
        counts = to_device(torch.tensor([tokens, chunks, int(stop_requested)]), device)
        tokens, chunks, stop = accelerator.reduce(counts, "sum")
    # DDP averages gradients over processes; scaling by `world` turns that average back
    # into the sum over the global batch, then / the step's masked-token count.
    scale = world / (tokens.clamp(min=1) if world > 1 else max(tokens, 1))
    local_nll = torch.zeros((), dtype=accumulation_dtype(device), device=device)
    varlen = accelerator.unwrap_model(objective).varlen_separator
    for k, arrays in enumerate(micro_batches):
        sync = nullcontext() if k == len(micro_batches) - 1 else accelerator.no_sync(objective)
        with sync:
            nll, _ = objective(**device_batch(arrays, device, varlen))
            accelerator.backward(nll * scale)
        local_nll += nll.detach().to(local_nll.dtype)
    accelerator.clip_grad_norm_(objective.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(accelerator.reduce(local_nll, "sum") if world > 1 else local_nll, tokens, chunks, stop)


def measure_step_seconds(config: TrainConfig, steps: int = 3) -> tuple[float, str]:
    """Seconds one optimizer step of ``config``'s shape (batch x chunk size, precision,
    model) takes on this machine, and the precision it ran in: the real step on random
    tokens, after 2 untimed ones (``WARMUP_STEPS_NOT_TIMED``). What the demo sizes its
    stages by."""
    from mlm_adapt.modeling.loading import load_model

    accelerator, precision = make_accelerator(config.precision)
    level = log.level
    log.setLevel(logging.ERROR)  # the run that follows repeats any warning about the model
    try:
        model = load_model(config.model)
    finally:
        log.setLevel(level)
    objective, optimizer, scheduler = optimisation(config, model, accelerator, WARMUP_STEPS_NOT_TIMED + steps)
    objective.train()
    rng = torch.Generator().manual_seed(config.seed)
    shape = (config.batch_size, config.data.chunk_size)
    # Ids past the first 1,000 (BERT's special and unused tokens), or the upper half of a small vocabulary.
    ids = torch.randint(min(1000, model.config.vocab_size // 2), model.config.vocab_size, shape, generator=rng)
    labels = torch.where(torch.rand(shape, generator=rng) < config.masking.train_mask_prob(), ids, IGNORE_INDEX)
    batch = [[a.numpy() for a in (ids, torch.ones_like(ids), labels)]] * config.grad_accum
    for _ in range(WARMUP_STEPS_NOT_TIMED):
        train_step(objective, optimizer, scheduler, accelerator, batch).read()
    began = time.perf_counter()
    for _ in range(steps):
        outcome = train_step(objective, optimizer, scheduler, accelerator, batch)
    outcome.read()  # on a GPU: the steps have run
    return (time.perf_counter() - began) / steps, precision


def optimisation(config: TrainConfig, model, accelerator, total_steps: int, separator: int | None = None):
    """AdamW, linear schedule, and the objective wrapped for this launch (DDP, FSDP, ...);
    ``separator``: the objective's, with --packing. It changes nothing in the process: the
    allocator setting that speeds up a CPU step is the command line's
    (``speed.tune_process``)."""
    # The fused AdamW kernel (CPU and CUDA): 104 -> 38 ms a step for DistilBERT on 2 cores.
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps(total_steps), total_steps)
    if config.compile:
        compile_encoder(model)
    objective, optimizer = accelerator.prepare(MaskedLMObjective(model, separator=separator), optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: our step counts already include processes
    return objective, optimizer, scheduler


def compile_encoder(model) -> None:
    """``torch.compile`` the encoder in place (state-dict keys unchanged). Off by default:
    on a 2-core CPU it was slower than eager (docs/performance.md)."""
    for module in model.children():
        if module is getattr(model, model.base_model_prefix, None):
            module.compile()
