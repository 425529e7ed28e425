"""cpu_dropout: BERT's dropout distribution from cheaper random numbers, and models
that use it compute what transformers' eager attention computes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMaskedLM

from mlm_adapt.config import ModelConfig
from mlm_adapt.modeling.loading import load_model
from mlm_adapt.speed.cpu_dropout import CpuDropout, cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_drop_rate_and_scale_in_every_lane(p):
    torch.manual_seed(0)
    x = torch.ones(1 << 20)
    out = cpu_dropout(x, p, training=True)
    dropped = (out == 0).reshape(-1, 4).float()
    sigma = (p * (1 - p) / dropped.shape[0]) ** 0.5
    # Each of the four 16-bit lanes of a 64-bit random word drops at rate p (a draw
    # that leaves a word's top bit 0 would make one lane drop ~2p or never).
    assert torch.allclose(dropped.mean(dim=0), torch.full((4,), p), atol=5 * sigma)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - p)), rtol=1e-4)
    assert out.mean().item() == pytest.approx(1.0, abs=5e-3)


def test_identity_when_not_training_or_p_zero_and_seeded():
    x = torch.randn(64, 33)
    assert cpu_dropout(x, 0.1, training=False) is x
    assert cpu_dropout(x, 0.0, training=True) is x
    torch.manual_seed(3)
    first = cpu_dropout(x, 0.1, training=True)
    torch.manual_seed(3)
    assert torch.equal(first, cpu_dropout(x, 0.1, training=True))
    assert cpu_dropout(x.to(torch.bfloat16), 0.1, training=True).dtype == torch.bfloat16


def test_gradient_is_the_mask_times_the_scale():
    x = torch.randn(1000, requires_grad=True)
    out = cpu_dropout(x, 0.2, training=True)
    out.sum().backward()
    assert torch.allclose(x.grad, (out != 0).float() * (1 / (1 - 0.2)), rtol=1e-4)


@pytest.mark.parametrize("fixture", ["bert_dir", "roberta_dir", "distilbert_dir"])
def test_models_match_transformers_eager_attention(fixture, request):
    folder = request.getfixturevalue(fixture)
    ours = load_model(ModelConfig(str(folder)))
    reference = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager")
    assert ours.config._attn_implementation == "mlm_adapt_eager"
    assert sum(isinstance(m, CpuDropout) for m in ours.modules()) == \
        sum(isinstance(m, torch.nn.Dropout) for m in reference.modules()) > 0
    ids = torch.randint(5, ours.config.vocab_size, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    ours.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(ours(input_ids=ids, attention_mask=mask).logits,
                              reference(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
    ours.train()  # and in training: dropout active, so two passes differ
    assert not torch.equal(ours(input_ids=ids, attention_mask=mask).logits, ours(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("accelerator", [False, True])
def test_cheaper_dropout_only_where_the_model_trains_on_a_cpu(bert_dir, monkeypatch, accelerator):
    from mlm_adapt.config import ModelConfig
    from mlm_adapt.modeling import loading

    # CUDA, MPS or XPU: transformers' SDPA with torch's dropout (cpu_dropout's int64 words
    # are a CPU trick; MPS need not have them).
    monkeypatch.setattr(loading, "has_accelerator_device", lambda: accelerator)
    model = loading.load_model(ModelConfig(str(bert_dir)))
    assert (model.config._attn_implementation == "mlm_adapt_eager") == (not accelerator)
    assert any(type(m) is torch.nn.Dropout for m in model.modules()) == accelerator
    assert any(isinstance(m, CpuDropout) for m in model.modules()) == (not accelerator)
