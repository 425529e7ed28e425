"""Fill-mask predictions, optionally side by side for two models (before/after).

Texts may spell the mask ``[MASK]`` (BERT) or ``<mask>`` (RoBERTa) whatever the
model: both are rewritten to the model's own mask token, so one probe sentence
serves any pair of models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import pipeline

from mlm_adapt.config import DEFAULT_TOP_K, ModelConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.modeling.loading import load_model, load_tokenizer

MASK_SPELLINGS = re.compile(r"\[MASK\]|<mask>")


@dataclass(frozen=True)
class Prediction:
    token: str
    score: float
    sequence: str


def with_model_mask(text: str, mask_token: str) -> str:
    """``text`` with every ``[MASK]`` or ``<mask>`` replaced by ``mask_token``."""
    if not MASK_SPELLINGS.search(text):
        raise MlmAdaptError(f"no [MASK] or <mask> in {text!r}; mark the word to predict with [MASK]")
    return MASK_SPELLINGS.sub(lambda _: mask_token, text)


class FillMask:
    """A loaded model ready to fill masks; load once, call for many texts."""

    def __init__(self, model: ModelConfig | str, top_k: int = DEFAULT_TOP_K, *, loaded: tuple | None = None):
        """``loaded=(model, tokenizer)`` uses objects already in memory instead of loading ``model``."""
        if top_k < 1:
            raise MlmAdaptError(f"--top-k must be a positive number, not {top_k}")
        cfg = model if isinstance(model, ModelConfig) else ModelConfig(model=model)
        self.name = cfg.model
        network, self.tokenizer = loaded if loaded else (load_model(cfg), load_tokenizer(cfg))
        self.top_k = top_k
        device = 0 if torch.cuda.is_available() else "cpu"
        self._pipe = pipeline("fill-mask", model=network.eval(), tokenizer=self.tokenizer, device=device)

    def __call__(self, text: str) -> list[list[Prediction]]:
        """Top-k predictions for each mask in ``text``, in order of appearance."""
        prepared = with_model_mask(text, self.tokenizer.mask_token)
        with torch.inference_mode():
            out = self._pipe(prepared, top_k=self.top_k)
        per_mask = out if out and isinstance(out[0], list) else [out]
        return [[Prediction(p["token_str"].strip(), float(p["score"]), p["sequence"]) for p in mask] for mask in per_mask]


def fill_mask(model: ModelConfig | str, texts: list[str], top_k: int = DEFAULT_TOP_K) -> list[list[list[Prediction]]]:
    """Predictions for each text, each mask in it, best first."""
    for text in texts:
        with_model_mask(text, "[MASK]")  # refuse a text without a mask before loading anything
    filler = FillMask(model, top_k)
    return [filler(text) for text in texts]
