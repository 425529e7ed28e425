"""The optimizer step, shared by training, the demo's timing and the benchmark.

``train_step`` backpropagates the summed masked-token NLL of this process's
micro-batches divided by the masked-token count of the whole step over all
processes (torchtune-style): the gradient of the mean loss per masked token,
however tokens fall across micro-batches and processes.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext

import torch
from transformers import get_linear_schedule_with_warmup

from mlm_adapt.config import TrainConfig
from mlm_adapt.masking import IGNORE_INDEX
from mlm_adapt.models import MaskedLMObjective
from mlm_adapt.runtime import make_accelerator

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


def train_step(objective, optimizer, scheduler, accelerator, micro_batches: list) -> tuple[float, int, int]:
    """One optimizer step on this process's micro-batches; returns the global (nll sum,
    masked-token count, chunk count)."""
    world = accelerator.num_processes
    local = [sum(int((labels != IGNORE_INDEX).sum()) for _, _, labels in micro_batches), sum(len(m[0]) for m in micro_batches)]
    global_count, global_rows = (int(v) for v in accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum"))
    local_nll = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for k, arrays in enumerate(micro_batches):
        tensors = [torch.from_numpy(a).to(accelerator.device) for a in arrays]
        sync = nullcontext() if k == len(micro_batches) - 1 else accelerator.no_sync(objective)
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
    return float(accelerator.reduce(local_nll, "sum")), global_count, global_rows


def measure_step_seconds(config: TrainConfig, steps: int = 3) -> tuple[float, str]:
    """Seconds one optimizer step of ``config``'s shape (batch x chunk size, precision,
    model) takes on this machine, and the precision it ran in: the real step on random
    tokens, after 2 untimed ones (``WARMUP_STEPS_NOT_TIMED``). What the demo sizes its
    stages by."""
    from mlm_adapt.models import load_model

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
    ids = torch.randint(1000, model.config.vocab_size, shape, generator=rng)
    labels = torch.where(torch.rand(shape, generator=rng) < config.masking.train_mask_prob(), ids, IGNORE_INDEX)
    batch = [[a.numpy() for a in (ids, torch.ones_like(ids), labels)]] * config.grad_accum
    for _ in range(WARMUP_STEPS_NOT_TIMED):
        train_step(objective, optimizer, scheduler, accelerator, batch)
    began = time.perf_counter()
    for _ in range(steps):
        train_step(objective, optimizer, scheduler, accelerator, batch)
    return (time.perf_counter() - began) / steps, precision


def optimisation(config: TrainConfig, model, accelerator, total_steps: int, separator: int | None = None):
    """AdamW, linear schedule, and the objective wrapped for this launch (DDP, FSDP, ...);
    ``separator``: the objective's, with --packing."""
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
