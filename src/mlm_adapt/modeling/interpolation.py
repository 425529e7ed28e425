"""Weight-space interpolation of a base and an adapted model: ``(1 - a) * base + a * adapted``
(the idea of WiSE-FT, Wortsman et al. 2022, here for masked LMs).

Two models blend when they are one architecture (the same parameter names and shapes)
and the adapted model's vocabulary extends the base's (``--add-tokens`` appends rows): the
rows the base lacks come from the adapted model whatever ``a``. ``torch.lerp`` computes
``end - (end - start) * (1 - a)`` for ``a >= 0.5``, so ``a = 1`` gives the adapted weights
exactly, as ``a = 0`` gives the base's.
"""

from __future__ import annotations

import torch

from mlm_adapt.errors import MlmAdaptError


def check_vocabularies(base_tokenizer, adapted_tokenizer, names: tuple[str, str]) -> None:
    """Refuse a pair whose vocabularies differ other than by tokens the adapted one appended."""
    base, adapted = base_tokenizer.get_vocab(), adapted_tokenizer.get_vocab()
    changed = [token for token, index in base.items() if adapted.get(token) != index]
    if changed or any(index < len(base) for token, index in adapted.items() if token not in base):
        raise MlmAdaptError(
            f"--base {names[0]} and --adapted {names[1]}: their vocabularies differ ({len(base)} and {len(adapted)} "
            f"tokens, e.g. {(changed or ['a token inserted'])[0]!r}): only models whose vocabulary the adapted run "
            "extended (--add-tokens) can be blended")


def check_architectures(base: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor], base_rows: int,
                        names: tuple[str, str]) -> None:
    """Refuse two state dicts that are not one architecture: other parameter names, or shapes
    that differ other than in the vocabulary rows (``base_rows`` of them in the base)."""
    if set(base) != set(adapted):
        different = sorted(set(base) ^ set(adapted))
        raise MlmAdaptError(f"--base {names[0]} and --adapted {names[1]} are different architectures "
                            f"({len(different)} parameters in one only, e.g. {different[0]})")
    for name, tensor in adapted.items():
        other = base[name]
        if other.shape != tensor.shape and not (other.shape[0] == base_rows and other.shape[1:] == tensor.shape[1:]):
            raise MlmAdaptError(f"--base {names[0]} and --adapted {names[1]} are different architectures "
                                f"({name}: {tuple(other.shape)} vs {tuple(tensor.shape)})")


def interpolate(base: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * adapted`` for every floating-point tensor; the rows of
    an extended vocabulary and integer buffers (position ids) come from ``adapted``."""
    if not 0 <= alpha <= 1:
        raise MlmAdaptError(f"--alphas must lie in [0, 1], not {alpha}")
    blended = {}
    for name, end in adapted.items():
        start = base[name]
        if not end.is_floating_point():
            blended[name] = end.clone()
            continue
        start, end = start.detach().to(end.dtype), end.detach()
        if start.shape == end.shape:
            blended[name] = torch.lerp(start, end, alpha)
            continue
        out = end.clone()  # an extended vocabulary: its first rows blend, the rest are the adapted model's
        out[: start.shape[0]] = torch.lerp(start, end[: start.shape[0]], alpha)
        blended[name] = out
    return blended
