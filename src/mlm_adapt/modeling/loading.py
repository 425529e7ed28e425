"""Loading a masked LM and its tokenizer, and what a model family's shape implies for
its inputs (the longest chunk, sliding windows, position numbering).

Models load in float32 whatever dtype they were saved in; on CPUs with the attention
``speed.attention_for`` picks. The loss is ``modeling.objective``'s.
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import transformers
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from mlm_adapt import speed
from mlm_adapt.config import ModelConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.system.hub import offline_mode
from mlm_adapt.system.runtime import has_accelerator_device

log = logging.getLogger("mlm_adapt")

# Families whose position embeddings reserve pad_token_id + 1 leading slots, so
# max_position_embeddings overstates the usable length (514 -> 512 for RoBERTa).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer"}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports; mlm-adapt reports what matters itself."""
    level = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.logging.enable_progress_bar()


def _hub_hint(name: str, exc: Exception) -> str:
    if Path(name).expanduser().exists():
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    why = "offline mode is on (HF_HUB_OFFLINE)" if offline_mode("TRANSFORMERS_OFFLINE") else "the Hub may be unreachable or the id wrong"
    return f"{why}; check the id, or pass a local directory saved with save_pretrained"


def load_config(cfg: ModelConfig):
    """The model's ``config.json`` as a transformers config, or a clear error."""
    path = Path(cfg.model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise MlmAdaptError(f"--model {cfg.model}: the directory has no config.json (not a saved model)")
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
        if path.exists():
            raise MlmAdaptError(f"--model {cfg.model}: broken config.json ({str(exc).splitlines()[0]})") from None
        raise MlmAdaptError(f"--model {cfg.model}: cannot load ({_hub_hint(cfg.model, exc)})") from None


def load_tokenizer(cfg: ModelConfig):
    """The model's tokenizer; refuses one without a mask token (a causal LM's)."""
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MlmAdaptError(f"--model {cfg.model}: cannot load its tokenizer ({_hub_hint(cfg.model, exc)})") from None
    if tokenizer.mask_token is None:
        raise MlmAdaptError(
            f"--model {cfg.model}: its tokenizer has no mask token, so it is not a masked language model "
            "(a causal LM such as GPT-2?); pick a BERT-, DistilBERT- or RoBERTa-style model"
        )
    return tokenizer


def load_model(cfg: ModelConfig, packing: bool = False) -> torch.nn.Module:
    """``AutoModelForMaskedLM`` from safetensors, in float32 whatever dtype it was saved in;
    warns when the MLM head is freshly initialised.

    transformers 5 loads a checkpoint in its saved dtype, and many are saved in fp16 or
    bf16: float32 weights are what training needs (AdamW updates below bf16's resolution
    would be lost) and what autocast expects; the speed of half precision comes from
    autocast (``--precision``), not from the stored dtype."""
    config = load_config(cfg)
    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(
                cfg.model,
                config=config,
                attn_implementation=_attention(config, packing),
                use_safetensors=None if cfg.allow_pickle else True,
                trust_remote_code=cfg.trust_remote_code,
                output_loading_info=True,
                dtype=torch.float32,
            )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise MlmAdaptError(f"--model {cfg.model}: a {config.model_type} model has no masked-LM form") from None
        raise
    except OSError as exc:
        if "safetensors" in str(exc) and not cfg.allow_pickle:
            raise MlmAdaptError(
                f"--model {cfg.model}: no safetensors weights found; pickle (.bin) weights can run code when "
                "loaded, so they load only with --allow-pickle (use it only for files you trust)"
            ) from None
        raise MlmAdaptError(f"--model {cfg.model}: cannot load weights ({_hub_hint(cfg.model, exc)})") from None
    speed.after_load(model)  # cheaper dropout masks where speed.attention_for chose its attention
    if cfg.allow_pickle:
        log.warning("--allow-pickle: pickle weights, if any were loaded, can execute code; use only trusted files")
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    setattr(model, FRESH_WEIGHTS, sorted(missing))
    if missing:
        log.warning(
            "%s has no masked-LM head (%d weights missing, e.g. %s): a freshly initialised head is used, "
            "so train before trusting its predictions",
            cfg.model, len(missing), sorted(missing)[0],
        )
    return model


# The attribute ``load_model`` leaves on a model: the names of the weights its checkpoint
# lacked, which were initialised at random (an encoder saved without its MLM head).
FRESH_WEIGHTS = "mlm_adapt_fresh_weights"


def fresh_weights(model) -> list[str]:
    """The weights ``load_model`` initialised at random, for want of them in the checkpoint."""
    return getattr(model, FRESH_WEIGHTS, [])


def _attention(config, packing: bool = False) -> str | None:
    """transformers' default attention (SDPA, whose dropout is fused) except: on CPUs, the
    speed work's eager attention with cheaper dropout masks (``speed.attention_for``);
    with --packing on a CUDA GPU with the flash-attn package, FlashAttention's varlen
    kernels (the per-document 4-D mask packing otherwise needs rules FlashAttention out).
    Apple's MPS keeps the default too: int64 random words are not a given there."""
    if packing and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return speed.attention_for(config, on_cpu=not has_accelerator_device())


def max_chunk_size(config, tokenizer) -> int:
    """The longest input the model accepts (its position table, less any offset)."""
    limit = getattr(config, "max_position_embeddings", None) or 10**9
    if config.model_type in _OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    if 0 < tokenizer.model_max_length < 10**6:
        limit = min(limit, tokenizer.model_max_length)
    return int(limit)


def sliding_window(config) -> int | None:
    """How far a token sees in a family's sliding-window layers, or None without them.
    ModernBERT's ``local_attention`` is the window's full width (half to each side)."""
    if config.model_type == "modernbert" or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        width = getattr(config, "local_attention", None) or 2 * (getattr(config, "sliding_window", None) or 0)
        return width // 2 if width else None
    return None


def takes_4d_mask(config, length: int) -> bool:
    """Whether a 4-D additive mask means the same to this model as its 0/1 padding mask at
    inputs of ``length`` tokens. transformers hands a 4-D mask unchanged to every layer, so a
    sliding-window layer given one attends globally: fine only where the window spans the input."""
    window = sliding_window(config)
    return window is None or length - 1 <= window


def check_packing(config, chunk_size: int) -> None:
    """Refuse --packing (a 4-D per-document mask) for a model whose sliding window it would undo."""
    if not takes_4d_mask(config, chunk_size):
        raise MlmAdaptError(
            f"--packing: a {config.model_type} model's sliding-window layers (a window of {sliding_window(config)} "
            f"tokens to each side) cannot take the per-document mask packing needs at --chunk-size {chunk_size}: "
            f"train without --packing, or with --chunk-size {sliding_window(config) + 1} or less")


def position_numbering(config) -> tuple[int, int]:
    """(first position id, padding's position id) of a model family: RoBERTa-style
    models number positions from pad id + 1 and give padding the pad id."""
    if config.model_type in _OFFSET_POSITIONS:
        pad = config.pad_token_id or 0
        return pad + 1, pad
    return 0, 0
