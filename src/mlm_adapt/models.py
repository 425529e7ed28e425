"""Loading a masked LM and its tokenizer, and the masked-token loss.

:func:`masked_lm_nll` is the one loss the training and evaluation loops use. For
the BERT, DistilBERT, RoBERTa (and XLM-R, CamemBERT) and ModernBERT families it
runs the encoder, then the model's own MLM head only at the masked positions:
the vocabulary projection is about a third of a DistilBERT forward pass, yet only
~15% of positions need it, and the full ``batch x length x vocab`` logits tensor
is never built; for the post-LayerNorm families the last layer's position-wise part
runs on those positions only too (``last_layer``). Other architectures fall back to
the model's full forward.
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from mlm_adapt import cpu_dropout, last_layer
from mlm_adapt.config import ModelConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.hub import offline_mode
from mlm_adapt.masking import IGNORE_INDEX
from mlm_adapt.packing import document_attention_mask, document_position_ids, padding_attention_mask
from mlm_adapt.runtime import has_accelerator_device, speed_paths

log = logging.getLogger("mlm_adapt")

SPARSE_BUCKET = 128

# Attention functions that take a flattened batch with cu_seq_lens bounds (varlen) instead
# of a mask: what --packing uses on a GPU where FlashAttention is installed.
VARLEN_ATTENTION = {"flash_attention_2", "flash_attention_3"}

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
    if model.config._attn_implementation == cpu_dropout.ATTENTION:
        cpu_dropout.use_cpu_dropout(model)
    if cfg.allow_pickle:
        log.warning("--allow-pickle: pickle weights, if any were loaded, can execute code; use only trusted files")
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        log.warning(
            "%s has no masked-LM head (%d weights missing, e.g. %s): a freshly initialised head is used, "
            "so train before trusting its predictions",
            cfg.model, len(missing), sorted(missing)[0],
        )
    return model


def _attention(config, packing: bool = False) -> str | None:
    """Plain ("eager") attention on CPUs, with cpu_dropout's cheaper masks: eager is ~6%
    faster than SDPA's CPU kernels for 128-token chunks in bf16 (docs/performance.md).
    GPUs (CUDA, and Apple's MPS, where int64 random words are not a given) keep
    transformers' default (SDPA, whose dropout is already fused), except that --packing
    on a CUDA GPU with the flash-attn package takes FlashAttention's varlen kernels: the
    per-document 4-D mask packing otherwise needs rules FlashAttention out."""
    if packing and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if not speed_paths() or has_accelerator_device() or config.model_type not in ("bert", "roberta", "xlm-roberta", "camembert", "distilbert"):
        return None
    cpu_dropout.register()
    return cpu_dropout.ATTENTION


def max_chunk_size(config, tokenizer) -> int:
    """The longest input the model accepts (its position table, less any offset)."""
    limit = getattr(config, "max_position_embeddings", None) or 10**9
    if config.model_type in _OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    if 0 < tokenizer.model_max_length < 10**6:
        limit = min(limit, tokenizer.model_max_length)
    return int(limit)


def _sparse_parts(model) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None:
    """(encoder, head) for families whose MLM head can run on selected positions only."""
    kind = model.config.model_type
    if kind == "bert" and hasattr(model, "cls"):
        return model.bert, model.cls
    if kind in ("roberta", "xlm-roberta", "camembert") and hasattr(model, "lm_head"):
        return getattr(model, model.base_model_prefix), model.lm_head
    if kind == "distilbert" and hasattr(model, "vocab_projector"):
        def head(h: torch.Tensor) -> torch.Tensor:
            return model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
        return model.distilbert, head
    if kind == "modernbert" and hasattr(model, "decoder"):
        return model.model, lambda h: model.decoder(model.head(h))
    return None


def supports_sparse_prediction(model) -> bool:
    """Whether the loss runs the MLM head on the masked positions only."""
    return speed_paths() and _sparse_parts(model) is not None


def trims_last_layer(model) -> bool:
    """Whether the loss runs the last layer's position-wise part on the masked rows only."""
    parts = _sparse_parts(model)
    return speed_paths() and parts is not None and last_layer.trimmable(parts[0]) is not None


def masked_lm_nll(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor, *, sparse: bool = True,
    per_row: bool = False, per_token: bool = False, positions: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None, attention_kwargs: dict | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the masked positions, and how many there are; with
    ``per_row``, the sums of each row; with ``per_token``, each position's (zero where
    nothing is masked), shaped as ``input_ids``: what confidence intervals resample.

    Summing (not averaging) lets callers normalise by the token count of a whole
    optimizer step or evaluation set, as perplexity needs. ``positions``: the flat
    indices of the labelled tokens when the caller has them already (the training step
    finds them on the host: ``torch.nonzero`` on a GPU waits for the GPU to catch up).
    ``attention_mask`` None: every token is real. ``position_ids`` None: the model's own.
    ``attention_kwargs``: passed to the encoder's attention function (varlen bounds), which
    only the sparse path's direct encoder call forwards.
    """
    flat_labels = labels.reshape(-1)
    if positions is None:
        positions = torch.nonzero(flat_labels != IGNORE_INDEX).squeeze(1)
    count = int(positions.numel())
    reduction = "none" if per_row or per_token else "sum"
    extra = ({} if position_ids is None else {"position_ids": position_ids}) | (attention_kwargs or {})
    # MLM_ADAPT_PLAIN=1 (runtime.speed_paths): the model's own forward and full logits.
    parts = _sparse_parts(model) if (sparse and speed_paths()) or attention_kwargs else None
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[positions].float(), flat_labels[positions], reduction=reduction)
    else:
        # Round the number of predicted rows up to a multiple of SPARSE_BUCKET (padding rows
        # are ignored by the loss): a handful of distinct tensor sizes instead of one per
        # batch keeps the allocator from fragmenting (RSS grew from 1.7 to 3+ GB in 40 steps).
        padded = -(-count // SPARSE_BUCKET) * SPARSE_BUCKET if speed_paths() else count
        rows = torch.cat([positions, positions.new_zeros(padded - count)])
        targets = torch.cat([flat_labels[positions], flat_labels.new_full((padded - count,), IGNORE_INDEX)])
        encoder, head = parts
        logits = head(_hidden_at(encoder, rows, count, input_ids=input_ids, attention_mask=attention_mask, **extra))
        losses = F.cross_entropy(logits.float(), targets, reduction=reduction, ignore_index=IGNORE_INDEX)
    if not (per_row or per_token):
        return losses, count
    dense = torch.zeros(input_ids.numel(), dtype=losses.dtype, device=losses.device)
    dense = dense.index_copy_(0, positions, losses[:count]).view(input_ids.shape)
    return (dense if per_token else dense.sum(dim=1)), count


def _hidden_at(encoder, rows: torch.Tensor, count: int, **inputs) -> torch.Tensor:
    """The encoder's last hidden state at the flat positions ``rows`` (the first ``count``
    distinct, the rest padding); the last layer's queries and position-wise part run on
    those rows only where ``last_layer`` knows its layout (and the speed paths are on)."""
    layer = last_layer.trimmable(encoder) if speed_paths() else None
    if layer is None or rows.numel() >= inputs["input_ids"].numel():  # bucket padding can exceed a tiny batch
        hidden = encoder(**inputs).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1])[rows]
    with last_layer.skipped(layer) as call:
        hidden = encoder(**inputs).last_hidden_state  # the last layer's input
    return last_layer.tail(layer, hidden, rows, call, count)


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


class MaskedLMObjective(torch.nn.Module):
    """``masked_lm_nll`` as a module, so that a DDP/FSDP wrapper (``accelerator.prepare``)
    sees every forward pass: calling the inner encoder directly would bypass the
    wrapper's gradient-synchronisation bookkeeping. With ``separator`` (``--packing``)
    no token attends across the documents a chunk packs together, and each document's
    positions restart (:func:`document_position_ids`): through a 4-D mask, or, for a
    varlen attention function (FlashAttention), with the batch flattened into one row
    cut at ``bounds`` (``packing.sequence_bounds``, which ``device_batch`` adds)."""

    def __init__(self, model: torch.nn.Module, sparse: bool = True, separator: int | None = None):
        super().__init__()
        self.model = model
        self.sparse = sparse
        self.separator = separator

    @property
    def varlen_separator(self) -> int | None:
        """The separator whose documents ``device_batch`` should cut into varlen bounds, if any."""
        varlen = self.model.config._attn_implementation in VARLEN_ATTENTION and _sparse_parts(self.model) is not None
        return self.separator if varlen else None

    def forward(self, input_ids, attention_mask, labels, per_row: bool = False, per_token: bool = False,  # noqa: D102 - see masked_lm_nll
                positions=None, bounds=None, longest=None):
        position_ids = None
        if self.separator is not None:
            position_ids = document_position_ids(input_ids, attention_mask, self.separator,
                                                 *position_numbering(self.model.config))
            if bounds is not None:
                return self._varlen(input_ids, labels, position_ids, bounds, longest, per_row, per_token, positions)
            attention_mask = document_attention_mask(input_ids, attention_mask, self.separator)
        elif attention_mask is not None and attention_mask.ndim == 2 and takes_4d_mask(self.model.config, input_ids.shape[1]):
            attention_mask = padding_attention_mask(attention_mask)  # a sliding-window model keeps its 0/1 mask
        return masked_lm_nll(self.model, input_ids, attention_mask, labels, sparse=self.sparse, per_row=per_row,
                             per_token=per_token, positions=positions, position_ids=position_ids)

    def _varlen(self, input_ids, labels, position_ids, bounds, longest, per_row, per_token, positions):
        """The packed batch as one row of segments: no [B, 1, L, L] mask, which rules out FlashAttention."""
        varlen = {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}
        nll, count = masked_lm_nll(self.model, input_ids.reshape(1, -1), None, labels.reshape(1, -1),
                                   per_token=per_row or per_token, positions=positions,
                                   position_ids=position_ids.reshape(1, -1), attention_kwargs=varlen)
        if not (per_row or per_token):
            return nll, count
        nll = nll.view(input_ids.shape)
        return (nll if per_token else nll.sum(dim=1)), count
