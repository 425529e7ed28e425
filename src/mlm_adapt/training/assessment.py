"""``mlm-adapt assess``: is a corpus worth adapting to, and what would a run cost? Measured in
a few minutes before a long run: the base model's perplexity on held-out documents of the
corpus (and of general text), how the tokenizer splits its words, how much of it repeats,
how long its documents are, how many training chunks it gives, and this machine's step time.

The recommendation reads the numbers as a practitioner would; its thresholds (below) are
rules of thumb, stated with the reason in the output so a user can weigh them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from mlm_adapt.config import AssessConfig, EvalConfig, TrainConfig
from mlm_adapt.data.corpus import read_texts
from mlm_adapt.data.duplicates import SHINGLE_WORDS, THRESHOLD, duplicate_groups, near_duplicate_groups
from mlm_adapt.evaluation.perplexity import evaluate_sets
from mlm_adapt.evaluation.vocabulary import fragmentation
from mlm_adapt.modeling.preparation import prepare
from mlm_adapt.system.runtime import make_accelerator
from mlm_adapt.training.optimizer_step import measure_step_seconds

DUPLICATES_FIRST = 0.3  # a share of repeated documents above which deduplicating comes first
LARGE_HEADROOM = 2.0  # base perplexity on the corpus / on general text: much to learn
LITTLE_HEADROOM = 1.25  # ... at most this: the corpus reads like what the model knows
FEW_CHUNKS = 500  # fewer training chunks: an epoch of a few steps, a small effect at best


def document_statistics(texts: list[str], tokenizer) -> dict[str, Any]:
    """Exact (case and white space aside) and near duplicate shares (``data.duplicates``:
    MinHash over word 3-grams) and the spread of document lengths in tokens."""
    exact, near = (len(np.unique(groups(texts))) for groups in (duplicate_groups, near_duplicate_groups))
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else [[]]
    lengths = np.array([len(ids) for ids in encoded])
    p10, median, p90 = np.percentile(lengths, [10, 50, 90])
    return {"documents": len(texts), "duplicate_share": 1 - exact / max(len(texts), 1),
            "near_duplicate_share": 1 - near / max(len(texts), 1),
            "document_tokens": {"p10": float(p10), "median": float(median), "p90": float(p90), "mean": float(lengths.mean())}}


def recommendation(result: dict[str, Any]) -> str:
    """The plain advice and its reason, from :func:`assess`'s numbers."""
    advice = []
    if result["duplicate_share"] >= DUPLICATES_FIRST:
        advice.append(f"{result['duplicate_share']:.0%} of the documents are duplicates: deduplicate first "
                      "(each copy is trained on again, and copies can sit on both sides of the held-out split)")
    elif result["near_duplicate_share"] >= DUPLICATES_FIRST:
        advice.append(f"{result['near_duplicate_share']:.0%} of the documents are near duplicates (word {SHINGLE_WORDS}-grams "
                      f"overlapping by a Jaccard similarity of {THRESHOLD} or more): deduplicate first")
    ratio = result.get("headroom")
    if ratio is None:
        advice.append(f"base perplexity {result['base_perplexity']:.1f} on the corpus; give --general-data to "
                      "compare it with text the model already knows")
    elif ratio >= LARGE_HEADROOM:
        advice.append(f"base perplexity {ratio:.1f}x higher on the corpus than on the general text: large headroom")
    elif ratio <= LITTLE_HEADROOM:
        advice.append(f"the corpus reads like the general text to this model (perplexity ratio {ratio:.2f}): little to gain")
    else:
        advice.append(f"base perplexity {ratio:.1f}x that on the general text: some headroom")
    if result["training_chunks"] < FEW_CHUNKS:
        advice.append(f"only {result['training_chunks']} training chunks: expect a small effect, and watch the "
                      "held-out perplexity for overfitting (--select best, --early-stop)")
    fertility = result["fertility"]["domain"]["tokens_per_word"]
    general = (result["fertility"].get("general") or {}).get("tokens_per_word")
    if general is not None and fertility > 1.2 * general:
        advice.append(f"the tokenizer splits the corpus's words more ({fertility:.2f} tokens per word vs {general:.2f}): "
                      "see `mlm-adapt vocab` and --add-tokens")
    return "; ".join(advice)


def assess(config: AssessConfig) -> dict[str, Any]:
    """Measure ``config.data`` (and ``config.general``) with ``config.model``; return
    ``assess --json``'s keys, the recommendation among them."""
    accelerator, precision = make_accelerator(config.precision)
    evaluation = EvalConfig(model=config.model, data=dataclasses.replace(config.data, train_size=None),
                            batch_size=config.batch_size, precision=config.precision, seed=config.seed)
    prepared = prepare(evaluation, accelerator, general=config.general)
    results = evaluate_sets(accelerator.prepare(prepared.objective()), prepared, config.batch_size, accelerator)
    texts = list(read_texts(config.data, config.max_documents))
    general_texts = list(read_texts(config.general, config.max_documents)) if config.general is not None else None
    fertility = fragmentation(prepared.tokenizer, texts, general_texts, top=10).to_json()
    chunks = prepared.data.train.train_chunks(0)
    seconds, step_precision = measure_step_seconds(TrainConfig(model=config.model, data=config.data, batch_size=config.batch_size,
                                                               precision=config.precision, seed=config.seed))
    result = {"model": config.model.model, "data": config.data.data, "base_perplexity": results["eval"].perplexity,
              "base_perplexity_interval": list(results["eval"].interval(config.seed)),
              **document_statistics(texts, prepared.tokenizer),
              "fertility": {"domain": fertility["domain"], "general": fertility["general"]},
              "training_chunks": chunks, "seconds_per_step": seconds, "precision": step_precision,
              "steps_per_epoch": math.ceil(chunks / config.batch_size),
              "seconds_per_epoch": seconds * math.ceil(chunks / config.batch_size)}
    if "general" in results:
        result |= {"general_base_perplexity": results["general"].perplexity,
                   "headroom": results["eval"].perplexity / results["general"].perplexity}
    result["recommendation"] = recommendation(result)
    return result
