"""Every model of a comparison measured on the same things: the held-out domain documents and
their masks, the general text's held-out documents, and the task's tested rows with one set
of probe folds. What they share is built once (:func:`shared_split`, :func:`task_rows`);
each model then costs its own forward passes and probe fits, saved in ``DIR/scores/`` and
reused while the model and what it is measured on stay the same.

A model's measurement is a set of additive tables, one row of sums per group
(``evaluation.multibootstrap``): per held-out document, NLL and masked tokens; per group of
duplicate task rows, correct predictions and rows, and per class true and false positives
and false negatives (each averaged over the probe's k-fold repeats).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlm_adapt.config import CompareConfig, ModelConfig, ProbeConfig, TrainConfig
from mlm_adapt.data import task_adaptive
from mlm_adapt.evaluation import probing
from mlm_adapt.evaluation.multibootstrap import group_sums
from mlm_adapt.evaluation.perplexity import evaluate_loss
from mlm_adapt.modeling.loading import load_model, load_tokenizer
from mlm_adapt.modeling.objective import MaskedLMObjective
from mlm_adapt.modeling.preparation import Prepared, prepare


@dataclass(frozen=True)
class Shared:
    """What every model is measured on: the once-masked held-out sets (``prepared``, built with
    the base) and the task's rows (None without --task-data)."""

    config: TrainConfig  # the run whose held-out documents are the shared ones
    prepared: Prepared
    rows: probing.ProbeRows | None
    probe: ProbeConfig | None

    def key(self) -> str:
        """What a saved measurement was made on: the split's options and the task's rows."""
        options = dataclasses.asdict(self.config.data)
        options.update(masking=dataclasses.asdict(self.config.masking), seed=self.config.data_seed(),
                       general=self.config.general_data, task_share=self.config.task_test_share)
        if self.rows is not None:
            options.update(texts=hashlib.sha256("\x00".join(self.rows.texts).encode()).hexdigest(),
                           labels=self.rows.labels.tolist(), tested=self.rows.tested, seeds=self.rows.seeds,
                           folds=self.rows.folds, finetune=self.probe.finetune, max_length=self.probe.max_length)
        return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


def shared_split(measured: TrainConfig, accelerator) -> Prepared:
    """The base loaded and the held-out sets built as ``measured`` (a run on the shared corpus,
    the task's held-back rows kept out of it) builds them."""
    return prepare(measured, accelerator, general=measured.general_data_config(), task=task_adaptive.for_run(measured))


def task_rows(config: CompareConfig, models: list[str]) -> tuple[ProbeConfig | None, probing.ProbeRows | None]:
    """The task's rows every model is tested on: held back from every run, and (``leakage``)
    whose text none of ``models`` trained on; one sample, one set of folds."""
    run = config.run
    probe = run.task_probe_config()
    if probe is None:
        return None, None
    trust = {"allow_pickle": run.model.allow_pickle, "trust_remote_code": run.model.trust_remote_code}
    probe = dataclasses.replace(probe, models=tuple(ModelConfig(m, **trust) for m in models), max_rows=config.max_rows,
                                finetune=config.finetune, precision=run.precision)
    return probe, probing.probe_rows(probe)


def _perplexity_tables(model, shared: Shared, batch_size: int, accelerator) -> dict[str, np.ndarray]:
    """Per held-out document, (NLL, masked tokens), on the domain and the general text."""
    objective = accelerator.prepare(MaskedLMObjective(model, separator=shared.prepared.separator))
    sets = {"domain": shared.prepared.eval_set, "general": shared.prepared.general_set}
    tables = {}
    for name, masked in sets.items():
        if masked is None:
            continue
        result = evaluate_loss(objective, masked, batch_size, accelerator)
        tables[name] = group_sums(np.stack([result.piece_nll, result.piece_tokens], axis=1), result.piece_documents)
    return tables


def _task_tables(model_config, loaded: tuple, shared: Shared) -> dict[str, np.ndarray]:
    """Per group of duplicate tested rows: (correct, rows) and per class (tp, fp, fn), each
    averaged over the probe's repeats."""
    rows = shared.rows
    scores = probing.model_scores(shared.probe, model_config, rows, loaded={model_config.model: loaded})
    truth, predicted = scores.truth[None, :], scores.predicted
    columns = [(predicted == truth).mean(axis=0), np.ones(rows.tested)]
    for c in range(len(rows.names)):
        for hit in ((predicted == c) & (truth == c), (predicted == c) & (truth != c), (predicted != c) & (truth == c)):
            columns.append(hit.mean(axis=0))
    per_row = np.stack(columns, axis=1)
    groups = rows.groups[: rows.tested]
    return {"accuracy": group_sums(per_row[:, :2], groups), "macro_f1": group_sums(per_row[:, 2:], groups)}


def _stamp(model: str) -> str:
    """A saved model's identity: its weights file's size and time (a retrained run differs)."""
    path = Path(model)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files) or model


def measure(model: str, shared: Shared, cache: Path, batch_size: int, accelerator) -> dict[str, np.ndarray]:
    """``model``'s tables (see the module's docstring), from ``cache`` (an .npz) when it was
    measured on the same split and rows with the same weights, else measured and saved."""
    key = f"{shared.key()}|{_stamp(model)}"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return {name: saved[name] for name in saved.files if name != "key"}
    # Loaded once for both measurements (the probe embeds with the same weights).
    model_config = dataclasses.replace(shared.config.model, model=model)
    weights = load_model(model_config, packing=shared.config.data.packing)
    tables = _perplexity_tables(weights, shared, batch_size, accelerator)
    if shared.rows is not None:
        tables.update(_task_tables(model_config, (weights, load_tokenizer(model_config)), shared))
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".tmp.npz")
    np.savez(partial, key=np.array(key), **tables)
    partial.replace(cache)  # a measurement killed half-way is never read as whole
    return tables
