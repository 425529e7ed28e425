"""--precision auto picks what the hardware does fast."""

import pytest

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.system.runtime import choose_precision, make_accelerator


@pytest.mark.parametrize(
    "choice, cuda, cuda_bf16, cpu_bf16, expected",
    [
        ("auto", False, False, True, "bf16"),
        ("auto", False, False, False, "fp32"),
        ("auto", True, True, False, "bf16"),
        ("auto", True, False, True, "fp16"),
        ("fp32", False, False, True, "fp32"),
        ("bf16", False, False, False, "bf16"),
        ("fp16", True, False, False, "fp16"),
    ],
)
def test_choose_precision(choice, cuda, cuda_bf16, cpu_bf16, expected):
    assert choose_precision(choice, cuda=cuda, cuda_bf16=cuda_bf16, cpu_bf16=cpu_bf16) == expected


def test_fp16_on_cpu_is_refused():
    with pytest.raises(MlmAdaptError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", cuda=False, cuda_bf16=False, cpu_bf16=True)


def test_accelerators_with_different_precisions_in_one_process():
    # accelerate's state is process-wide: each new accelerator replaces the last one's settings.
    a, pa = make_accelerator("fp32")
    assert (pa, a.mixed_precision) == ("fp32", "no")
    b, pb = make_accelerator("bf16")
    assert (pb, b.mixed_precision) == ("bf16", "bf16")


@pytest.mark.parametrize("choice, cuda, cpu_bf16, warns", [
    ("bf16", False, False, True),   # AVX2-only CPU: emulated bf16
    ("bf16", False, True, False),   # AVX512-BF16 / AMX CPU: native
    ("auto", False, False, False),  # auto already picks fp32 there
    ("fp32", False, False, False),
    ("bf16", True, False, False),   # GPUs are checked by choose_precision
])
def test_forcing_bf16_on_a_cpu_without_bf16_instructions_warns(choice, cuda, cpu_bf16, warns):
    from mlm_adapt.system.runtime import precision_warning

    message = precision_warning(choice, cuda=cuda, cpu_bf16=cpu_bf16)
    assert (message is not None) == warns
    if warns:
        assert "emulated" in message and "--precision auto" in message


def test_the_warning_reaches_the_user(monkeypatch, mlm_log):
    from mlm_adapt.system import runtime

    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)  # simulate an AVX2-only CPU
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    assert runtime.detect_precision("bf16") == "bf16"
    assert any("emulated" in r.getMessage() for r in mlm_log.records)
    mlm_log.clear()
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert runtime.detect_precision("bf16") == "bf16" and runtime.detect_precision("auto") == "bf16"
    assert not any("emulated" in r.getMessage() for r in mlm_log.records)


@pytest.mark.parametrize("variable, cap, native", [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False), ("DNNL_MAX_CPU_ISA", "avx512_core", False),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True),
])
def test_an_isa_cap_below_bf16_means_emulated_bf16(monkeypatch, variable, cap, native):
    import torch

    from mlm_adapt.system import runtime

    # The CPU itself has the instructions; only the cap decides.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert runtime.cpu_supports_bf16({variable: cap}) is native
    assert runtime.cpu_supports_bf16({}) is True


def test_keep_freed_memory_reuses_the_heap_instead_of_fresh_mappings():
    import ctypes
    import platform

    import torch

    from mlm_adapt.speed import keep_freed_memory

    assert not keep_freed_memory({"MLM_ADAPT_SYSTEM_MALLOC": "1"})
    assert platform.libc_ver()[0] == "glibc", "this suite's machines (CI included) run glibc"
    assert keep_freed_memory({})

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    size = 96 << 20  # over glibc's largest default mmap threshold (32 MB)
    mapped_before = mallinfo2().hblkhd
    tensor = torch.ones(size // 4)
    assert mallinfo2().hblkhd - mapped_before < size  # from the heap, not a fresh mapping
    del tensor
    assert mallinfo2().fordblks >= size  # freed, kept for the next step


def test_loss_sums_are_float64_except_on_apples_mps():
    import torch

    from mlm_adapt.system.runtime import accumulation_dtype

    assert accumulation_dtype(torch.device("cpu")) == accumulation_dtype(torch.device("cuda", 0)) == torch.float64
    assert accumulation_dtype(torch.device("mps")) == torch.float32  # MPS has no float64


@pytest.mark.parametrize("card, native, expected", [("T4/V100/P100 (emulated bf16)", False, "fp16"),
                                                    ("A100/H100", True, "bf16")])
def test_auto_precision_on_cuda_counts_native_bf16_only(monkeypatch, card, native, expected):
    import torch

    from mlm_adapt.system import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # torch's own answer counts emulation unless asked not to: what a T4 gives.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    assert runtime.detect_precision("auto") == expected, card
    if not native:
        with pytest.raises(MlmAdaptError, match="no bf16 support"):
            runtime.detect_precision("bf16")


def test_tf32_for_fp32_on_cuda_only():
    import torch

    from mlm_adapt.system.runtime import use_tf32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert not use_tf32("fp32", cuda=False) and not use_tf32("bf16", cuda=True)
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert use_tf32("fp32", cuda=True) and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_deepspeed_with_gradient_accumulation_is_refused():
    from accelerate.utils import DistributedType

    from mlm_adapt.system.runtime import check_launch

    with pytest.raises(MlmAdaptError, match="--grad-accum with DeepSpeed"):
        check_launch(DistributedType.DEEPSPEED, 2)
    check_launch(DistributedType.DEEPSPEED, 1)
    check_launch(DistributedType.MULTI_GPU, 4)


def test_the_accelerator_keeps_dynamo_off_buffers_unbroadcast_and_a_long_process_group_timeout(monkeypatch):
    from accelerate.utils import DynamoBackend

    from mlm_adapt.system.runtime import PROCESS_GROUP_TIMEOUT, make_accelerator

    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "inductor")  # what `accelerate config` with dynamo writes
    accelerator, _ = make_accelerator("fp32")
    assert accelerator.state.dynamo_plugin.backend == DynamoBackend.NO
    assert accelerator.ddp_handler.broadcast_buffers is False
    assert accelerator.init_handler.timeout == PROCESS_GROUP_TIMEOUT > __import__("datetime").timedelta(minutes=10)


def test_the_cpu_allocator_tuning_stays_off_on_a_gpu_run(monkeypatch):
    from mlm_adapt import speed

    calls = []
    monkeypatch.setattr(speed, "keep_freed_memory", lambda: calls.append(1) or True)
    assert not speed.tune_process("cuda") and calls == []  # a GPU's tensors are not in malloc's heap
    assert speed.tune_process("cpu") and calls == [1]
