"""Dropout with cheaper random numbers, for training on CPUs.

torch's CPU dropout draws one random number per element (``bernoulli_``, about
5 ns each here), and a BERT-base step draws ~40M of them: 11% of a bf16 step on
this machine (docs/performance.md). Here each 64-bit random word is cut into four
16-bit draws: 2.8x faster for attention-probability-sized tensors, the same
distribution to within 1e-5 of p, and the same seeded generator (so checkpoints
and resume stay exact).

:func:`use_cpu_dropout` swaps a model's ``nn.Dropout`` modules and points its
attention at :func:`eager_attention` (transformers' eager attention with this
dropout on the attention probabilities), registered as ``ATTENTION``.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION = "mlm_adapt_eager"
_LEVELS = 1 << 16


def cpu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each element with probability ``p`` (rounded to a multiple of 2**-16) and
    scale the rest by ``1 / (1 - p)``; the identity when not ``training``."""
    if not training or p == 0:
        return x
    dropped = round(p * _LEVELS)
    n = x.numel()
    # randint over the full int64 range: random_() leaves the top bit of each word 0.
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    keep = words.view(torch.int16)[:n].view(x.shape) >= dropped - _LEVELS // 2
    return x * keep * (_LEVELS / (_LEVELS - dropped))


class CpuDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same place in the model) drawing masks with :func:`cpu_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_dropout(x, self.p, self.training)


def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' ``eager_attention_forward`` of BERT, RoBERTa and DistilBERT, with
    :func:`cpu_dropout` on the attention probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = cpu_dropout(nn.functional.softmax(weights, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def register() -> None:
    """Make ``attn_implementation=ATTENTION`` loadable, with eager attention's additive
    masks (transformers builds no mask at all for an attention name it does not know)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(ATTENTION, eager_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)


def use_cpu_dropout(model: nn.Module) -> None:
    """Replace every ``nn.Dropout`` in ``model`` by a :class:`CpuDropout` of the same ``p``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, CpuDropout(child.p))
