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
    # The full int64 range: a plain random_() leaves the top bit of each word 0.
    # (random_ with bounds draws ~30% faster than randint over the same range.)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    keep = words.view(torch.int16)[:n].view(x.shape) >= dropped - _LEVELS // 2
    # uint8, not bool: bf16 x bool takes a slow type-promotion path (3.5 ms against
    # 0.7 ms for x uint8 on an attention-probability tensor of 3.1M elements).
    return _MaskAndScale.apply(x, keep.view(torch.uint8), _LEVELS / (_LEVELS - dropped))


class _MaskAndScale(torch.autograd.Function):
    """``x * keep * scale`` whose backward is ``grad * keep * scale``, keeping only the
    uint8 mask (autograd's own graph for it would multiply by the bool mask in both
    directions, through the slow promotion, and keep an extra intermediate)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


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
