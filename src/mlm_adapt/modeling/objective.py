"""The masked-token loss: :func:`masked_lm_nll`, the one loss the training and evaluation
loops use, :class:`MaskedLMObjective` (the module a data-parallel wrapper sees), and
:func:`device_batch` (a host micro-batch as the objective's arguments on a device).

For the BERT, DistilBERT, RoBERTa (and XLM-R, CamemBERT) and ModernBERT families the
loss runs the encoder, then the model's own MLM head at the masked positions only, and
the full ``batch x length x vocab`` logits tensor is never built: that and the rest of the
speed work sit behind ``speed.masked_hidden``, called from one place below. Other
architectures (and ``MLM_ADAPT_PLAIN=1``) run the model's full forward.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mlm_adapt import speed
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.data.packing import document_attention_mask, document_position_ids, padding_attention_mask, sequence_bounds
from mlm_adapt.modeling.loading import position_numbering, takes_4d_mask

# Attention functions that take a flattened batch with cu_seq_lens bounds (varlen) instead
# of a mask: what --packing uses on a GPU where FlashAttention is installed.
VARLEN_ATTENTION = {"flash_attention_2", "flash_attention_3"}


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
    return speed.enabled() and _sparse_parts(model) is not None


def trims_last_layer(model) -> bool:
    """Whether the loss runs the last layer's position-wise part on the masked rows only."""
    parts = _sparse_parts(model)
    return parts is not None and speed.trims_last_layer(parts[0])


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
    # MLM_ADAPT_PLAIN=1 (speed.enabled): the model's own forward and full logits.
    parts = _sparse_parts(model) if (sparse and speed.enabled()) or attention_kwargs else None
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[positions].float(), flat_labels[positions], reduction=reduction)
    else:
        encoder, head = parts
        hidden, targets = speed.masked_hidden(encoder, positions, flat_labels, input_ids=input_ids,
                                              attention_mask=attention_mask, **extra)
        losses = F.cross_entropy(head(hidden).float(), targets, reduction=reduction, ignore_index=IGNORE_INDEX)
    if not (per_row or per_token):
        return losses, count
    dense = torch.zeros(input_ids.numel(), dtype=losses.dtype, device=losses.device)
    dense = dense.index_copy_(0, positions, losses[:count]).view(input_ids.shape)
    return (dense if per_token else dense.sum(dim=1)), count


def device_batch(arrays: tuple[np.ndarray, np.ndarray, np.ndarray], device: torch.device,
                 varlen_separator: int | None = None) -> dict[str, torch.Tensor | int | None]:
    """A micro-batch as the objective's keyword arguments on ``device``, without waiting
    for a GPU: the masked positions are found on the host, and the copies go through
    pinned memory asynchronously (a plain ``.to("cuda")`` from pageable memory waits for
    the GPU's queue to drain). A chunk batch with no padding gets no attention mask,
    which also lets SDPA pick its FlashAttention kernel (it takes no mask). With
    ``varlen_separator`` (``MaskedLMObjective.varlen_separator``) the packed documents'
    varlen bounds and longest length come along, computed on the host too."""
    input_ids, attention, labels = arrays
    host = {"input_ids": input_ids, "attention_mask": None if attention.all() else attention, "labels": labels,
            "positions": np.flatnonzero(labels.reshape(-1) != IGNORE_INDEX)}
    longest = None
    if varlen_separator is not None:
        host["bounds"], longest = sequence_bounds(input_ids, host["attention_mask"], varlen_separator)
    tensors = {k: None if a is None else to_device(torch.from_numpy(a), device) for k, a in host.items()}
    return tensors if longest is None else {**tensors, "longest": longest}


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for a GPU: through pinned memory,
    asynchronously (``torch.tensor(..., device="cuda")`` copies from pageable memory,
    which waits for the GPU's queue to drain). On the CPU: the tensor itself."""
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
