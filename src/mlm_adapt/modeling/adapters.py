"""LoRA on a masked LM, through peft: which layers take adapters, what trains, and what a
run saves (a plain merged checkpoint, and the adapter in peft's own format).

The adapters are injected into the model in place (``get_peft_model`` wraps the model it
is given and swaps its ``nn.Linear`` layers for peft's): the objective, the speed paths
(which call the layers as modules) and the checkpoints keep working on the same object,
and :meth:`Adapter.merge` folds the adapters back into plain linear layers at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mlm_adapt.config import LoraSettings
from mlm_adapt.errors import MlmAdaptError

# Where a LoRA run's output folder keeps its adapter (peft's adapter_config.json and weights).
ADAPTER_FOLDER = "adapter"


def encoder_linears(model: torch.nn.Module) -> list[str]:
    """The full names of every ``nn.Linear`` inside the encoder (attention and feed-forward
    layers), found by type so every family's naming works (BERT's query/key/value/dense,
    DistilBERT's q_lin/.../lin1, ModernBERT's Wqkv/Wo/Wi). The MLM head is not in the
    encoder (``base_model_prefix``), and embeddings are not linear layers."""
    prefix = model.base_model_prefix
    encoder = getattr(model, prefix)
    return [f"{prefix}.{name}" for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)]


def chosen_linears(model: torch.nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The encoder's linear layers that ``targets`` name (by the last part of their path,
    e.g. ``query`` or ``value``); all of them for no targets. A name that matches none is
    a user error that lists the names there are."""
    linears = encoder_linears(model)
    if not targets:
        return linears
    leaves = {name.rsplit(".", 1)[-1] for name in linears}
    unknown = [t for t in targets if t not in leaves]
    if unknown:
        raise MlmAdaptError(f"--lora-targets: {', '.join(unknown)} matches no linear layer of the {model.config.model_type} "
                            f"encoder; its linear layers are named {', '.join(sorted(leaves))}")
    return [name for name in linears if name.rsplit(".", 1)[-1] in targets]


def head_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The MLM head's parameters: everything outside the encoder, and the decoder's weight,
    which BERT and RoBERTa tie to the input embeddings (so training it trains them)."""
    prefix = f"{model.base_model_prefix}."
    head = [param for name, param in model.named_parameters() if not name.startswith(prefix)]
    decoder = model.get_output_embeddings()
    return head + ([decoder.weight] if decoder is not None else [])


class Adapter:
    """LoRA adapters injected into ``model`` in place, everything else frozen, except the head
    with ``train_head`` and the rows of ``new_token_ids`` (words --add-tokens added, whose
    embeddings start as their pieces' mean and must learn): peft's trainable tokens train
    those rows alone, in the input embeddings and in the decoder tied to them."""

    def __init__(self, model: torch.nn.Module, settings: LoraSettings, new_token_ids: list[int]):
        from peft import LoraConfig, get_peft_model

        layers = chosen_linears(model, settings.targets)
        self.record = {"rank": settings.rank, "alpha": settings.alpha, "dropout": settings.dropout,
                       "targets": sorted({name.rsplit(".", 1)[-1] for name in layers}), "layers": len(layers),
                       "train_head": settings.train_head, "trainable_tokens": len(new_token_ids)}
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=layers, bias="none", trainable_token_indices=list(new_token_ids) or None)
        head = head_parameters(model) if settings.train_head else []  # before peft wraps the decoder
        self.peft_model = get_peft_model(model, config)  # freezes every parameter but the adapters'
        for param in head:
            param.requires_grad_(True)
        self._snapshot: AdapterSnapshot | None = None

    def merge(self) -> torch.nn.Module:
        """Keep the adapter's weights as they are now (what :meth:`write` saves), then fold it
        into plain layers: the model ``from_pretrained`` loads without peft, with the base's
        parameter names and count. The same model object, changed in place."""
        self._snapshot = snapshot(self.peft_model, embeddings=self.record["trainable_tokens"] > 0)
        return self.peft_model.merge_and_unload()

    def write(self, folder: Path) -> None:
        """The adapter in peft's format (after :meth:`merge`)."""
        self._snapshot.write(folder)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters and the plain model's total (a tied tensor counted once; peft's
    extra adapter tensors not counted: the merged model has the base's size)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plain = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "trainable_tokens_" not in n)
    return {"trainable_parameters": trainable, "total_parameters": plain}


@dataclass(frozen=True)
class AdapterSnapshot:
    """The adapter's weights and config, taken before merging, written as peft writes them."""

    config: Any
    state: dict[str, torch.Tensor]

    def write(self, folder: Path) -> None:
        """``folder`` gets ``adapter_config.json`` and ``adapter_model.safetensors``:
        ``PeftModel.from_pretrained(base, folder)`` loads it."""
        from peft.utils import SAFETENSORS_WEIGHTS_NAME

        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        save_file(self.state, str(folder / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})


def snapshot(peft_model, embeddings: bool) -> AdapterSnapshot:
    """The adapter as it is now (peft's state dict: adapter names stripped, as peft saves it);
    with ``embeddings`` (words were added) the resized embeddings too, which a base of the
    old vocabulary lacks."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, save_embedding_layers=embeddings)
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    config = peft_model.peft_config["default"]
    return AdapterSnapshot(config, state)
