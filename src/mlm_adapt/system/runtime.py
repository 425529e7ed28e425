"""Hardware decisions: numeric precision and the ``accelerate`` runtime.

``--precision auto`` picks bf16 autocast wherever the hardware multiplies bf16
matrices natively (CPUs with AVX512-BF16 or AMX; recent GPUs), fp16 with loss
scaling on older GPUs, and fp32 otherwise. On an AVX512-BF16 CPU bf16 matrix
products run about 4x faster than fp32 (see docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Mapping

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

from mlm_adapt.errors import MlmAdaptError

_ACCELERATE_NAMES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


# ISA caps (ONEDNN_MAX_CPU_ISA) under which oneDNN, which runs CPU bf16 matrix products,
# still uses bf16 instructions. Below them it emulates bf16: measured here with
# ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 CPU, 0.4 GFLOP/s against 407 uncapped.
_BF16_ISA_CAPS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
                  "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL")


def cpu_supports_bf16(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX) and
    oneDNN is not capped below them (``ONEDNN_MAX_CPU_ISA``, the old ``DNNL_MAX_CPU_ISA``)."""
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    if cap and cap.strip().upper() not in _BF16_ISA_CAPS:
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def choose_precision(choice: str, *, cuda: bool, cuda_bf16: bool, cpu_bf16: bool) -> str:
    """Resolve ``--precision`` to "bf16", "fp16" or "fp32" for the given hardware."""
    if choice == "auto":
        if cuda:
            return "bf16" if cuda_bf16 else "fp16"
        return "bf16" if cpu_bf16 else "fp32"
    if choice == "fp16" and not cuda:
        raise MlmAdaptError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32 (or auto)")
    if choice == "bf16" and cuda and not cuda_bf16:
        raise MlmAdaptError("--precision bf16: this GPU has no bf16 support; use fp16 or auto")
    return choice


def precision_warning(choice: str, *, cuda: bool, cpu_bf16: bool) -> str | None:
    """What to tell a user who forces a precision this hardware runs slowly, if anything."""
    if choice == "bf16" and not cuda and not cpu_bf16:
        # Without AVX512-BF16 or AMX, oneDNN emulates bf16 matrix products in fp32 plus
        # conversions. A user's report measured the course recipe's bf16 step at ~35 s against
        # ~3.8 s for an fp32 step on a 2-core AVX2-only EPYC: about 9x slower.
        return ("--precision bf16 on a CPU without bf16 instructions (no AVX512-BF16 or AMX): bf16 is emulated "
                "and several times slower than fp32 here (about 9x on a 2-core AVX2 CPU); use --precision auto "
                "(fp32 on this CPU) unless you need bf16 numerics")
    return None


def cuda_supports_bf16() -> bool:
    """Native bf16 on this CUDA GPU (Ampere and newer). ``torch.cuda.is_bf16_supported()``
    alone also counts emulation, which T4, V100 and P100 cards (Colab, Kaggle) offer at a
    fraction of fp16's speed: they get fp16 with loss scaling instead."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no such argument
        return torch.cuda.get_device_capability() >= (8, 0)


def detect_precision(choice: str) -> str:
    cuda = torch.cuda.is_available()
    cpu_bf16 = cpu_supports_bf16()
    warning = precision_warning(choice, cuda=cuda, cpu_bf16=cpu_bf16)
    if warning:
        logging.getLogger("mlm_adapt").warning(warning)
    return choose_precision(choice, cuda=cuda, cuda_bf16=cuda and cuda_supports_bf16(), cpu_bf16=cpu_bf16)


def use_tf32(precision: str, cuda: bool) -> bool:
    """fp32 on a CUDA GPU multiplies matrices in TF32 (Ampere and newer; ~8x the fp32 rate,
    with fp32's range and a 10-bit mantissa, as PyTorch's own examples and nanoGPT do).
    Returns whether it was switched on; nothing changes on a CPU."""
    if not (cuda and precision == "fp32"):
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


# How long a process waits in a collective for the others. NCCL's default (10 minutes)
# is shorter than work the main process does alone while the others wait at a barrier:
# tokenizing a large corpus (main_process_first), the task probe, the push to the Hub.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


# Launches in which every process holds the whole model (one process, or DDP on a device
# type accelerate knows): what one process can score alone, each can score its share of.
# FSDP, DeepSpeed, Megatron and the XLA launches (TPU, Neuron) shard or compile it.
WHOLE_MODEL_LAUNCHES = frozenset(
    DistributedType[name] for name in ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_MUSA",
                                       "MULTI_HPU", "MULTI_SDAA") if name in DistributedType.__members__)


def check_launch(distributed_type, grad_accum: int) -> None:
    """Refuse launches whose gradient accumulation this loop cannot drive: under DeepSpeed
    the engine steps the optimizer itself on every micro-batch unless accelerate's own
    accumulation (``accumulate``, ``sync_gradients``) tells it not to."""
    if str(getattr(distributed_type, "value", distributed_type)).upper() == "DEEPSPEED" and grad_accum > 1:
        raise MlmAdaptError("--grad-accum with DeepSpeed is not supported: the DeepSpeed engine would step the "
                            "optimizer on every micro-batch. Use --grad-accum 1 with a larger --batch-size, or "
                            "launch with DDP or FSDP")


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """The dtype loss sums accumulate in on ``device``: float64, except on Apple's MPS,
    which has no float64 (a float64 tensor there raises)."""
    return torch.float32 if device.type == "mps" else torch.float64


def has_accelerator_device() -> bool:
    """A GPU (CUDA, ROCm, XPU, MPS, ...) torch can use."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


# The package each --report-to choice needs (accelerate imports it only when chosen).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def make_accelerator(choice: str, report_to: str = "none", project_dir: Path | None = None) -> tuple[Accelerator, str]:
    """A fresh ``Accelerator`` with the resolved precision (and tracker), and the precision's name.

    accelerate keeps its settings in a process-wide singleton; resetting it (but not
    the distributed ``PartialState``) lets one process run several trainings with
    different precisions, as the library API and the tests do.
    """
    precision = detect_precision(choice)
    if report_to != "none" and importlib.util.find_spec(TRACKER_PACKAGES[report_to]) is None:
        raise MlmAdaptError(f"--report-to {report_to}: the package is not installed (pip install {TRACKER_PACKAGES[report_to]})")
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        # accelerate >= 1.x launches data-parallel CPU processes (torchrun, gloo) only
        # with cpu=True; without it each process silently trained alone.
        cpu=not has_accelerator_device(),
        mixed_precision=_ACCELERATE_NAMES[precision],
        log_with=None if report_to == "none" else report_to,
        project_dir=str(project_dir) if project_dir else None,
        # `accelerate config` with dynamo would compile the whole objective (sparse head, row
        # gathers); --compile compiles the encoder alone (optimisation.compile_encoder).
        dynamo_backend="no",
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT),
            # The masked LMs' buffers (position and token-type ids) never change: broadcasting
            # them from rank 0 before every forward is a collective for nothing.
            DistributedDataParallelKwargs(broadcast_buffers=False),
        ],
    )
    use_tf32(precision, accelerator.device.type == "cuda")
    return accelerator, precision
