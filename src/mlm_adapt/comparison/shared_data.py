"""Data every run of a comparison shares, made once: curated TAPT's picks (``select`` over
--pool, like the task's texts, by the base's embeddings), and the check that no recipe trained
on the held-out documents every model's domain perplexity is measured on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from mlm_adapt.config import CompareConfig, SelectConfig, TrainConfig
from mlm_adapt.data import task_adaptive
from mlm_adapt.data.corpus import load_corpus
from mlm_adapt.data.duplicates import normalised
from mlm_adapt.evaluation import provenance
from mlm_adapt.modeling.preparation import Prepared
from mlm_adapt.recipes.recipe import Inputs

log = logging.getLogger("mlm_adapt")


def held_out_texts(measured: TrainConfig, prepared: Prepared) -> set[str]:
    """The normalised texts of the shared held-out documents (numbered as the data stage
    numbers the corpus the runs of ``measured``'s kind train on)."""
    texts = (text for batch in load_corpus(measured.data).batches() for text in batch)
    documents = task_adaptive.documents(texts, prepared.task) if prepared.task is not None else (t for t in texts if t.strip())
    held = set(prepared.data.held_out.tolist())
    return {normalised(d) for number, d in enumerate(documents) if number in held}


def picks(config: CompareConfig, prepared: Prepared, measured: TrainConfig) -> Path:
    """Curated TAPT's documents: the --top of --pool nearest the task's texts, less any shared
    held-out document (a pool that holds the domain corpus would otherwise train on the texts
    domain perplexity is measured on). Named by what chose them, so a finished curated run
    on other picks is refused as another split, and reused across reruns."""
    from mlm_adapt.training.curation import select

    like = Inputs(config.run).task_texts()
    chosen_by = json.dumps([dataclasses.asdict(config.pool), dataclasses.asdict(like), config.top, config.run.model.model,
                            config.split_seed()], sort_keys=True, default=str)
    path = config.folder / "curated" / f"picks-{hashlib.sha256(chosen_by.encode()).hexdigest()[:10]}.jsonl"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp.jsonl")
    select(SelectConfig(pool=config.pool, like=like, output=partial, top=config.top, model=config.run.model,
                        precision=config.run.precision, overwrite=True))
    held = held_out_texts(measured, prepared)
    lines = partial.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if normalised(json.loads(line)["text"]) not in held]
    if len(kept) < len(lines):
        log.info("curated: %d picked documents are held-out domain documents and were dropped", len(lines) - len(kept))
    partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    partial.replace(path)
    return path


def overlap(held: set[str], folders: dict[str, str]) -> dict[str, int]:
    """Per recipe (its first run's folder), how many shared held-out documents it trained on
    (as its folder's record says, ``provenance``): each one makes its domain perplexity
    optimistic. 0 everywhere is what a fair comparison needs."""
    found = {}
    for recipe, folder in folders.items():
        trained = {normalised(t) for corpus in provenance.corpora(folder) for t in provenance.documents(corpus)}
        found[recipe] = len(held & trained)
    return found


