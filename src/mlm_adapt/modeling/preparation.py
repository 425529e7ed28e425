"""Everything a run or an evaluation needs before the first forward pass: the model and
tokenizer (``loading``), the chunks (``data.splits``) and the once-masked held-out sets
(``data.held_out``). :func:`prepare` is what ``train``, ``evaluate`` and ``blend`` share,
which is why ``evaluate`` reproduces a run's ``perplexity_after``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from accelerate.utils import set_seed

from mlm_adapt.config import DataConfig, EvalConfig, LoraSettings
from mlm_adapt.data.chunking import frame_ids
from mlm_adapt.data.held_out import MaskedSet, mask_eval_set
from mlm_adapt.data.masking import MaskingVocab
from mlm_adapt.data.splits import SplitData, load_split, with_replay
from mlm_adapt.data.task_adaptive import TaskTexts
from mlm_adapt.data.tokenization import token_bytes
from mlm_adapt.modeling.adapters import Adapter
from mlm_adapt.modeling.loading import check_packing, load_model, load_tokenizer, max_chunk_size
from mlm_adapt.modeling.objective import MaskedLMObjective


@dataclass
class Prepared:
    """Everything a run or an evaluation needs before the first forward pass."""

    model: torch.nn.Module
    tokenizer: Any
    data: SplitData
    eval_set: MaskedSet
    vocab: MaskingVocab
    added: list = field(default_factory=list)  # vocabulary.AddedWord, with --add-tokens
    general_set: MaskedSet | None = None  # held-out general text (--general-data): forgetting
    separator: int | None = None  # with --packing: the token that ends each packed document
    task: TaskTexts | None = None  # with --tapt: the task's texts the corpus gained, and its held-back rows
    general_held_out: np.ndarray | None = None  # the general text's held-out documents (its numbers)
    adapter: Adapter | None = None  # with --lora-rank: the LoRA adapters injected into ``model``

    def objective(self) -> MaskedLMObjective:
        return MaskedLMObjective(self.model, separator=self.separator)


def prepare(config: EvalConfig, accelerator=None, extend: Callable | None = None, general: DataConfig | None = None,
            replay_ratio: float | None = None, task: TaskTexts | None = None, lora: LoraSettings | None = None) -> Prepared:
    """Load model and tokenizer, build the chunks and the once-masked evaluation set.
    ``extend(model, tokenizer) -> (model, tokenizer, added)`` changes the vocabulary first;
    ``general`` adds a second held-out set, masked the same way (the forgetting check), and
    with ``replay_ratio`` that share of the training chunks comes from its training side;
    ``task`` (``--tapt``) adds the labelled task's texts to the corpus, less its held-back rows;
    ``lora`` (--lora-rank) then injects adapters into the model in place (``Prepared.adapter``),
    before the data is read, so that a bad choice fails fast."""
    # Seeds torch before loading: a checkpoint without an MLM head gets a random one,
    # and dropout draws from the same generator during training (the training seed). What
    # runs compared must share (held-out documents, their masks) comes from the split seed.
    set_seed(config.seed)
    split_seed = config.data_seed()
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, packing=config.data.packing)
    if config.data.packing:  # before the data is tokenized
        check_packing(model.config, config.data.chunk_size)
    model, tokenizer, added = extend(model, tokenizer) if extend is not None else (model, tokenizer, [])
    adapter = Adapter(model, lora, [a.id for a in added]) if lora is not None else None
    # Under torchrun the main process tokenizes first and fills the cache; the others then read it.
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        data = load_split(config.data, tokenizer, split_seed, max_chunk_size(model.config, tokenizer), task, config.seed)
        general_split = load_split(general, tokenizer, split_seed, max_chunk_size(model.config, tokenizer)) \
            if general is not None else None
    general_chunks = general_split.eval if general_split is not None else None
    if replay_ratio is not None:
        data = with_replay(data, general_split, replay_ratio, config.seed)
    vocab, byte_counts = MaskingVocab.from_tokenizer(tokenizer), token_bytes(tokenizer)
    eval_set = mask_eval_set(data.eval, config.masking, vocab, split_seed, byte_counts)
    general_set = mask_eval_set(general_chunks, config.masking, vocab, split_seed, byte_counts) \
        if general_chunks is not None else None
    separator = frame_ids(tokenizer)[1] if config.data.packing else None
    general_held_out = general_split.held_out if general_split is not None else None
    return Prepared(model, tokenizer, data, eval_set, vocab, added, general_set, separator, task, general_held_out, adapter)
