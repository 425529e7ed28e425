"""The optimizer step: its batch on the device, and no host sync inside it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import train_config
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.modeling.loading import load_model, load_tokenizer
from mlm_adapt.modeling.objective import MaskedLMObjective, device_batch
from mlm_adapt.system.runtime import make_accelerator
from mlm_adapt.training.optimizer_step import optimisation, train_step


def _micro_batch(vocab_size: int, rows: int, length: int, padded: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (rows, length))
    attention = np.ones_like(ids)
    if padded:
        attention[0, length // 2:] = 0
    labels = np.where((rng.random(ids.shape) < 0.3) & (attention == 1), ids, IGNORE_INDEX)
    return ids, attention, labels


@pytest.mark.parametrize("padded", [False, True])
def test_device_batch_finds_the_masked_positions_on_the_host(padded):
    ids, attention, labels = _micro_batch(50, 3, 16, padded)
    batch = device_batch((ids, attention, labels), torch.device("cpu"))
    assert batch["positions"].tolist() == [i for i, v in enumerate(labels.reshape(-1)) if v != IGNORE_INDEX]
    assert (batch["attention_mask"] is None) == (not padded)  # no padding: no mask (SDPA's flash kernel)
    assert torch.equal(batch["input_ids"], torch.from_numpy(ids)) and torch.equal(batch["labels"], torch.from_numpy(labels))


def test_device_batch_lands_on_an_accelerator_that_is_not_cuda():
    # Apple's MPS and Intel's XPU take no pinned copies; the inputs must still reach the
    # device the model is on ("meta" stands in for one on a CPU-only machine).
    ids, attention, labels = _micro_batch(50, 3, 16, padded=True)
    batch = device_batch((ids, attention, labels), torch.device("meta"))
    assert {k: t.device.type for k, t in batch.items()} == dict.fromkeys(batch, "meta")
    assert batch["positions"].shape == (int((labels != IGNORE_INDEX).sum()),)


@pytest.mark.parametrize("fixture", ["bert_dir", "roberta_dir", "distilbert_dir"])
def test_the_objective_on_a_device_batch_equals_it_on_the_plain_tensors(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    model = load_model(train_config(model_dir, "unused", "unused").model).eval()
    arrays = _micro_batch(model.config.vocab_size, 4, 20, padded=False)
    objective = MaskedLMObjective(model)
    with torch.no_grad():
        given, n_given = objective(**device_batch(arrays, torch.device("cpu")))
        plain, n_plain = objective(*(torch.from_numpy(a) for a in arrays))
    assert n_given == n_plain == int((arrays[2] != IGNORE_INDEX).sum())
    torch.testing.assert_close(given, plain)


class HostSync(AssertionError):
    pass


def _forbid_host_syncs(monkeypatch) -> None:
    """Make every way a tensor's value reaches Python raise: on a GPU each one waits for it."""
    def refuse(*args, **kwargs):
        raise HostSync("a tensor's value was read on the host")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    monkeypatch.setattr(torch, "nonzero", refuse)
    # Host data made straight on a device: from pageable memory, a copy that waits for the GPU.
    for name in ("tensor", "as_tensor"):
        made = getattr(torch, name)

        def on_host_only(*args, _made=made, **kwargs):
            if kwargs.get("device") is not None:
                raise HostSync(f"torch.{_made.__name__}(..., device=...): a blocking copy to the device")
            return _made(*args, **kwargs)

        monkeypatch.setattr(torch, name, on_host_only)


@pytest.mark.parametrize("attention", ["mlm-adapt", "sdpa"])
@pytest.mark.parametrize("packing", [False, True])
def test_train_step_reads_no_tensor_value_on_the_host(bert_dir, roberta_dir, monkeypatch, attention, packing):
    """What can be checked on a CPU of "no host syncs in the step": nothing in it (ours,
    transformers', accelerate's, the optimizer's) reads a tensor's value, with the
    attention a GPU runs (SDPA) and ours, with and without padding and --packing."""
    from transformers import AutoModelForMaskedLM

    for model_dir in (bert_dir, roberta_dir):
        config = train_config(model_dir, "unused", "unused", packing=packing)
        model = (load_model(config.model) if attention == "mlm-adapt"
                 else AutoModelForMaskedLM.from_pretrained(model_dir, attn_implementation="sdpa"))
        accelerator, _ = make_accelerator("fp32")
        separator = load_tokenizer(config.model).sep_token_id if packing else None
        objective, optimizer, scheduler = optimisation(config, model, accelerator, 4, separator)
        objective.train()
        steps = [[_micro_batch(model.config.vocab_size, 4, 24, padded, seed) for seed in (1, 2)] for padded in (False, True)]
        if packing:
            for micro_batches in steps:
                for ids, _, _ in micro_batches:
                    ids[:, 10] = separator
        with monkeypatch.context() as patch:
            _forbid_host_syncs(patch)
            outcomes = [train_step(objective, optimizer, scheduler, accelerator, batches) for batches in steps]
            with pytest.raises(HostSync):  # the guard is live
                float(outcomes[0].nll)
        for outcome, micro_batches in zip(outcomes, steps):
            nll, tokens, chunks = outcome.read()
            assert math.isfinite(nll) and nll > 0
            assert tokens == sum(int((labels != IGNORE_INDEX).sum()) for *_, labels in micro_batches)
            assert chunks == 8


def test_the_step_and_the_evaluation_sum_in_the_devices_dtype(bert_dir, monkeypatch):
    """On MPS (no float64) loss sums accumulate in float32: asked for here on the CPU."""
    from mlm_adapt.data.held_out import MaskedSet
    from mlm_adapt.evaluation import perplexity
    from mlm_adapt.training import optimizer_step

    config = train_config(bert_dir, "unused", "unused")
    model = load_model(config.model)
    accelerator, _ = make_accelerator("fp32")
    objective, optimizer, scheduler = optimisation(config, model, accelerator, 2)
    ids, attention, labels = _micro_batch(model.config.vocab_size, 6, 24, padded=True, seed=3)
    masked = MaskedSet(ids, attention, labels)
    exact = perplexity.evaluate_loss(objective, masked, 4, accelerator)
    asked = []
    for module in (optimizer_step, perplexity):
        monkeypatch.setattr(module, "accumulation_dtype", lambda device: asked.append(device) or torch.float32)
    single = perplexity.evaluate_loss(objective, masked, 4, accelerator)
    # Each token's loss is float32 already: held in float32, it sums to the same number.
    assert single.masked_tokens == exact.masked_tokens and single.nll_sum == pytest.approx(exact.nll_sum, rel=1e-9)
    outcome = train_step(objective, optimizer, scheduler, accelerator, [_micro_batch(model.config.vocab_size, 4, 24, False)])
    assert outcome.nll.dtype == torch.float32 and math.isfinite(outcome.read()[0])
    assert asked == [accelerator.device] * 2


@pytest.mark.parametrize("packing", [False, True])
def test_evaluation_reads_no_tensor_value_on_the_host_until_its_end(bert_dir, monkeypatch, packing):
    """The evaluation's batches, like the step: no value read per batch (it used to copy
    three arrays to the device and find the masked positions there, each batch)."""
    from mlm_adapt.data.held_out import MaskedSet
    from mlm_adapt.evaluation import perplexity

    config = train_config(bert_dir, "unused", "unused", packing=packing)
    model = load_model(config.model)
    accelerator, _ = make_accelerator("fp32")
    separator = load_tokenizer(config.model).sep_token_id if packing else None
    objective, _, _ = optimisation(config, model, accelerator, 2, separator)
    objective.eval()  # as evaluate_loss sets it: no dropout
    ids, attention, labels = _micro_batch(model.config.vocab_size, 10, 24, padded=True, seed=4)
    masked = MaskedSet(ids, attention, labels)
    expected = perplexity.evaluate_loss(objective, masked, 4, accelerator)
    with monkeypatch.context() as patch:
        _forbid_host_syncs(patch)
        with torch.inference_mode():
            token_nll = perplexity.score_shard(objective, masked, 4, accelerator)
    assert float(token_nll.sum()) == pytest.approx(expected.nll_sum, rel=1e-9)
