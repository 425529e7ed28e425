"""The fine-tuned probe (``mlm-adapt probe --finetune``): per seed split, a fresh copy of
each model with a classification head (``AutoModelForSequenceClassification``) is fully
fine-tuned for a few epochs on the training part and scored on the test part.

Slower than the frozen probe by the cost of training, and closer to what a user will do
downstream; Gururangan et al. 2020 fine-tune this way (their Table 5's numbers are means
over five seeds, with standard deviations of up to ~6 points).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, get_linear_schedule_with_warmup

from mlm_adapt.config import ModelConfig, ProbeConfig
from mlm_adapt.data.seeding import Salt, generator
from mlm_adapt.modeling.loading import load_config, load_tokenizer, quiet_transformers
from mlm_adapt.system.runtime import detect_precision

log = logging.getLogger("mlm_adapt")

_AUTOCAST = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_classifier(cfg: ModelConfig, classes: int) -> torch.nn.Module:
    """The model's encoder under a freshly initialised classification head."""
    config = load_config(cfg)
    config.num_labels = classes  # with a config object given, from_pretrained passes kwargs to the model
    with quiet_transformers():  # the new head's "newly initialized" notice is expected
        return AutoModelForSequenceClassification.from_pretrained(
            cfg.model, config=config, dtype=torch.float32,  # fp32 master weights, as models.load_model
            use_safetensors=None if cfg.allow_pickle else True, trust_remote_code=cfg.trust_remote_code)


def _batches(encoded: list[dict], labels: np.ndarray, rows: np.ndarray, batch_size: int, collate) -> list[dict]:
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = collate([encoded[i] for i in chunk])
        batch["labels"] = torch.from_numpy(labels[chunk]).long()
        out.append(batch)
    return out


def finetune_predict(cfg: ModelConfig, encoded: list[dict], labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                     config: ProbeConfig, seed: int, collate) -> np.ndarray:
    """Fine-tune a fresh classifier on rows ``train`` (seeded order and head); predict ``test``.

    Process-local on purpose: no DDP wrapper, so that one process of a multi-process run
    (the main one, after training) can probe alone without waiting for the others in a
    collective. Mixed precision is plain autocast, with loss scaling for fp16."""
    torch.manual_seed(seed)  # the head's initialisation and dropout
    precision = detect_precision(config.precision)
    device = PartialState().device
    model = load_classifier(cfg, int(labels.max()) + 1).to(device)
    steps = config.finetune_epochs * -(-len(train) // config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast = torch.autocast(device.type, dtype=_AUTOCAST[precision], enabled=precision != "fp32")
    order = generator(seed, Salt.FINETUNE_ORDER)
    model.train()
    for _ in range(config.finetune_epochs):
        for batch in _batches(encoded, labels, order.permutation(train), config.batch_size, collate):
            with autocast:
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's default, and train's
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    predicted = []
    with torch.inference_mode(), autocast:
        for batch in _batches(encoded, labels, test, config.batch_size, collate):
            batch.pop("labels")
            predicted.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.argmax(-1))
    return torch.cat(predicted).cpu().numpy()


def finetuner(cfg: ModelConfig, texts: list[str], labels: np.ndarray, config: ProbeConfig):
    """``predict(train_rows, test_rows, seed)`` for ``probing.split_scores``: the texts are
    tokenized once; each call fine-tunes a fresh classifier."""
    tokenizer = load_tokenizer(cfg)
    batch = tokenizer(texts, truncation=True, max_length=config.max_length)
    encoded = [{k: batch[k][i] for k in batch} for i in range(len(texts))]
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def predict(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
        log.info("fine-tuning %s on the split of seed %d (%d rows, %d epochs) ...", cfg.model, seed, len(train),
                 config.finetune_epochs)
        return finetune_predict(cfg, encoded, labels, train, test, config, seed, collate)

    return predict
