"""Scoring a saved model on the held-out text a ``train`` run with the same options used:
``mlm-adapt evaluate`` (perplexity on the fixed masks, against a base model with
``--compare``) and ``--pseudo`` (pseudo-log-likelihood, each text on its own).
"""

from __future__ import annotations

import itertools

import numpy as np

from mlm_adapt.config import DEFAULT_PSEUDO_TEXTS, DataConfig, EvalConfig, ModelConfig
from mlm_adapt.data.masking import IGNORE_INDEX
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation.perplexity import EvalResult, evaluate_loss, token_nll
from mlm_adapt.evaluation.pseudolikelihood import pseudo_token_nll, text_rows
from mlm_adapt.evaluation.word_ledger import check_ranking, ledger, occurrences
from mlm_adapt.modeling.loading import load_model, load_tokenizer
from mlm_adapt.modeling.objective import MaskedLMObjective
from mlm_adapt.modeling.preparation import prepare
from mlm_adapt.system.runtime import make_accelerator


def pseudo_perplexity(config: EvalConfig, max_texts: int = DEFAULT_PSEUDO_TEXTS, word_l2r: bool = True,
                      base: ModelConfig | None = None) -> tuple[EvalResult, list[dict], EvalResult | None]:
    """Pseudo-log-likelihood of ``config.model`` on up to ``max_texts`` texts, each scored on
    its own (``pseudolikelihood.text_rows``): the held-out documents a ``train`` run with
    these options uses (the first rows of a stream). Returns the pooled result (its interval
    resamples texts), one ``{"index", "nll", "tokens"}`` per text (``index``: its row in
    ``--data``) and, given ``base``, the base model's result on the same texts (each text's
    ``base_nll`` added). ``word_l2r``: PLL-word-l2r (Kauf & Ivanova 2023), else the original."""
    if base is not None:
        check_same_vocabulary(base, config.model)
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    rows, texts = held_out_texts(config.data, prepared.data.held_out, max_texts, prepared.data.held_out_rows)
    chunks = text_rows(prepared.tokenizer, texts, config.data.chunk_size)
    scored = chunks.word_ids >= 0

    def score(objective) -> np.ndarray:
        return pseudo_token_nll(accelerator.prepare(objective), chunks, prepared.tokenizer.mask_token_id, accelerator.device,
                                config.batch_size, word_l2r)

    token_nll = score(prepared.objective())
    per_text = [{"index": int(row), "nll": float(nll), "tokens": int(count)}
                for row, nll, count in zip(rows, token_nll.sum(axis=1), scored.sum(axis=1))]
    base_result = None
    if base is not None:
        base_nll = score(MaskedLMObjective(load_model(base, packing=config.data.packing), separator=prepared.separator))
        for entry, nll in zip(per_text, base_nll.sum(axis=1)):
            entry["base_nll"] = float(nll)
        base_result = EvalResult.from_tokens(base_nll, scored, chunks.documents)
    return EvalResult.from_tokens(token_nll, scored, chunks.documents), per_text, base_result


def held_out_texts(config: DataConfig, held_out: np.ndarray | None, limit: int,
                   held_out_rows: np.ndarray | None = None) -> tuple[list[int], list[str]]:
    """(row in --data, text) of up to ``limit`` held-out documents, in order: by document
    number in memory (``held_out``), by row for a stream (``held_out_rows``)."""
    from mlm_adapt.data.corpus import numbered_documents

    numbers = None if held_out is None else set(held_out.tolist())
    rows = None if held_out_rows is None else set(held_out_rows.tolist())
    chosen = ((row, text) for row, number, text in numbered_documents(config)
              if (numbers is None or number in numbers) and (rows is None or row in rows))
    pairs = list(itertools.islice(chosen, limit))
    return [row for row, _ in pairs], [text for _, text in pairs]


def evaluate(config: EvalConfig) -> EvalResult:
    """Perplexity of ``config.model`` on the held-out chunks a ``train`` run with these options used."""
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    objective = accelerator.prepare(prepared.objective())
    return evaluate_loss(objective, prepared.eval_set, config.batch_size, accelerator)


def check_same_vocabulary(base: ModelConfig, model: ModelConfig):
    """``model``'s tokenizer, if ``base`` has the same vocabulary (before any data is read);
    otherwise the two cannot score the same tokens."""
    base_tokenizer, tokenizer = load_tokenizer(base), load_tokenizer(model)
    if base_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise MlmAdaptError(
            f"--compare {base.model}: its vocabulary ({len(base_tokenizer)} tokens) differs from {model.model}'s "
            f"({len(tokenizer)}), so the two cannot score the same masked tokens; compare bits per byte of "
            "two `mlm-adapt evaluate` runs instead")
    return tokenizer


def evaluate_against(config: EvalConfig, base: ModelConfig, words: int = 0,
                     words_by: str = "total") -> tuple[EvalResult, EvalResult, dict | None]:
    """``base`` and ``config.model`` on the same held-out chunks and masks (those a ``train``
    run with these options used, tokenized by ``config.model``'s tokenizer): (base, model,
    and with ``words`` the word ledger of the ``words`` words that changed most, ranked
    ``words_by`` (``word_ledger.ledger``), else None).
    Refuses a base whose vocabulary differs: it could not score the same tokens."""
    check_ranking(words_by)
    tokenizer = check_same_vocabulary(base, config.model)
    accelerator, _ = make_accelerator(config.precision)
    prepared = prepare(config, accelerator)
    masked = prepared.eval_set
    model_nll = token_nll(accelerator.prepare(prepared.objective()), masked, config.batch_size, accelerator)
    base_objective = MaskedLMObjective(load_model(base, packing=config.data.packing), separator=prepared.separator)
    base_nll = token_nll(accelerator.prepare(base_objective), masked, config.batch_size, accelerator)
    scored = masked.labels != IGNORE_INDEX
    results = [EvalResult.from_tokens(nll, scored, masked.documents, masked.masked_bytes) for nll in (base_nll, model_nll)]
    words_changed = ledger(occurrences(base_nll, model_nll, masked, prepared.data.eval, tokenizer), words, words_by) if words else None
    return results[0], results[1], words_changed
