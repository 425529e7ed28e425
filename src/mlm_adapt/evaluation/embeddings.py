"""Texts as vectors: an encoder's mean-pooled last hidden states, one per text. What the
probe classifies and what ``select`` searches for the texts nearest a task's."""

from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def embed(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 32, precision: str = "fp32") -> np.ndarray:
    """Mean-pooled last hidden states over real tokens: one vector per text (float32), the
    encoder run in ``precision`` (``--precision``: "auto" is bf16 where the CPU or GPU has it)."""
    from mlm_adapt.system.runtime import detect_precision

    encoder = getattr(model, model.base_model_prefix, model).eval()
    device = next(encoder.parameters()).device  # a trained model may sit on a GPU
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(detect_precision(precision))
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1)).float())
    return torch.cat(vectors).cpu().numpy()  # one copy back, not one per batch
