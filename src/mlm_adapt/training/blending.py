"""``mlm-adapt blend``: the base and the adapted model interpolated in weight space at each
``a`` of ``--alphas``, every blend measured on the held-out documents and masks a ``train``
run with the same options used (domain and general-text perplexity with intervals paired
with the base's, and the task probe), and one blend saved as an ordinary model folder.

Which one (``pick``): a given ``a``; with ``max_forgetting`` the largest ``a`` whose
general-text perplexity rose at most that many percent over the base's (``a = 0``);
otherwise the lowest domain perplexity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from mlm_adapt.config import BlendConfig, EvalConfig, ModelConfig, ProbeConfig
from mlm_adapt.evaluation import probing, provenance
from mlm_adapt.evaluation.perplexity import evaluate_sets, evaluation_record
from mlm_adapt.modeling.interpolation import check_architectures, check_vocabularies, interpolate
from mlm_adapt.modeling.loading import load_model, load_tokenizer
from mlm_adapt.modeling.preparation import prepare
from mlm_adapt.outputs import artifacts
from mlm_adapt.outputs.blend_report import blend_html, blend_png
from mlm_adapt.system.runtime import make_accelerator

log = logging.getLogger("mlm_adapt")


def blend(config: BlendConfig, measured: Mapping[float, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Measure every blend of ``config.alphas``, save the picked one to ``config.output``
    (when given) and return the summary ``blend --json`` prints. ``measured``: the
    evaluation records (``evaluation_record``) of some ``a`` already measured on these very
    held-out sets and paired with the base's, e.g. a run's saved step for ``a = 1`` when
    the run started from ``config.base``: they are not measured again."""
    measured = measured or {}
    names = (config.base.model, config.adapted.model)
    check_vocabularies(load_tokenizer(config.base), load_tokenizer(config.adapted), names)  # before any data is read
    accelerator, _ = make_accelerator(config.precision)
    evaluation = EvalConfig(model=config.adapted, data=config.data, masking=config.masking, batch_size=config.batch_size,
                            precision=config.precision, seed=config.seed)
    prepared = prepare(evaluation, accelerator, general=config.general)
    adapted = {k: v.detach().clone() for k, v in prepared.model.state_dict().items()}
    base_model = load_model(config.base)
    base = base_model.state_dict()
    check_architectures(base, adapted, base_model.config.vocab_size, names)
    objective = accelerator.prepare(prepared.objective())
    entries, start = [], None
    for alpha in config.alphas:
        if alpha in measured:
            record = measured[alpha]
        else:
            prepared.model.load_state_dict(interpolate(base, adapted, alpha))
            results = evaluate_sets(objective, prepared, config.batch_size, accelerator)
            record = evaluation_record(results, config.seed, before=start)
        if alpha == 0:  # the base (alphas are sorted, so it comes first): later blends are paired with it
            start = record
        entries.append(_entry(alpha, record, prepared, config))
        log.info("a = %g: perplexity %.3f%s", alpha, record["perplexity"],
                 f", general perplexity {record['general_perplexity']:.3f}" if "general_perplexity" in record else "")
    picked, rule = pick(entries, config)
    summary = {"base": config.base.model, "adapted": config.adapted.model, "alphas": entries, "picked": picked, "rule": rule}
    if config.output is not None and accelerator.is_main_process:
        prepared.model.load_state_dict(interpolate(base, adapted, picked))
        _save(config.output, prepared, summary, config.overwrite)
    return summary


def _entry(alpha: float, record: dict[str, Any], prepared, config: BlendConfig) -> dict[str, Any]:
    """One ``a``'s numbers: ``blend --json``'s keys plus intervals (paired with ``a = 0``'s)."""
    keep = ("perplexity", "perplexity_interval", "perplexity_change_interval", "general_perplexity",
            "general_perplexity_interval", "general_perplexity_change_interval", "interval_resamples")
    entry = {"alpha": alpha, **{k: record[k] for k in keep if k in record}}
    if config.task is not None:
        name = f"{config.adapted.model} (a={alpha:g})"
        task = ProbeConfig(models=(ModelConfig(name),), data=config.task.data, label_column=config.task.label_column,
                           seed=config.seed)
        scores = probing.probe(task, loaded={name: (prepared.model, prepared.tokenizer)})["models"][0]
        entry |= {"accuracy": scores["accuracy_mean"], "macro_f1": scores["macro_f1_mean"]}
    return entry


def pick(entries: list[dict[str, Any]], config: BlendConfig) -> tuple[float, str]:
    """(the picked ``a``, the rule that picked it)."""
    if config.pick is not None:
        return config.pick, f"a = {config.pick:g} as given (--pick)"
    if config.max_forgetting is not None:
        base = next(e for e in entries if e["alpha"] == 0)["general_perplexity"]
        limit = base * (1 + config.max_forgetting / 100)
        allowed = [e["alpha"] for e in entries if e["general_perplexity"] <= limit]
        return max(allowed), (f"the largest a whose general-text perplexity rose at most {config.max_forgetting:g}% "
                              f"over the base's ({base:.3f})")
    best = min(entries, key=lambda e: (e["perplexity"], -e["alpha"]))
    return best["alpha"], "the lowest held-out domain perplexity"


def _save(output: Path, prepared, summary: dict[str, Any], overwrite: bool) -> None:
    def extras(folder: Path) -> None:
        # A blend saw what both its models saw: a later probe of it leaves their texts out of its tests.
        provenance.write(folder, None, [], models=(summary["base"], summary["adapted"]))
        png = blend_png(summary)
        (folder / "blend.png").write_bytes(png)
        (folder / "report.html").write_text(blend_html(summary, png), encoding="utf-8")

    folder = artifacts.prepare_output(output, overwrite)
    artifacts.save_final(folder, prepared.model, prepared.tokenizer, summary, write_extra=extras)
    log.info("saved the blend a = %g to %s", summary["picked"], folder)
