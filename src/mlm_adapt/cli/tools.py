"""The commands around a run: ``vocab``, ``probe``, ``fill-mask`` and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlm_adapt import config as cfg
from mlm_adapt import flat_options
from mlm_adapt.cli.options import (
    AllowPickle,
    ConfigFile,
    Data,
    Encoding,
    GeneralData,
    GeneralEncoding,
    GeneralSplit,
    GeneralTextColumn,
    JsonOut,
    Model,
    PrecisionOpt,
    Seed,
    Split,
    TextColumn,
    TrustRemote,
    tool_option,
    with_config_file,
)
from mlm_adapt.outputs import summaries


def vocab(
    model: Model = None, data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    general_data: GeneralData = None, general_split: GeneralSplit = None, general_text_column: GeneralTextColumn = None,
    general_encoding: GeneralEncoding = None,
    top: Annotated[Optional[int], tool_option(cfg.VocabConfig, "top")] = None,
    max_documents: Annotated[Optional[int], tool_option(cfg.VocabConfig, "max_documents")] = None,
    json_out: JsonOut = False, config: ConfigFile = None,
) -> None:
    """How MODEL's tokenizer fragments the words of DATA, costliest first (what --add-tokens adds)."""
    from mlm_adapt.evaluation.vocabulary import report

    given = with_config_file(config, {
        "model": model, "data": data, "split": split, "text_column": text_column, "encoding": encoding,
        "general_data": general_data, "general_split": general_split, "general_text_column": general_text_column,
        "general_encoding": general_encoding, "top": top, "max_documents": max_documents}, _VOCAB_OPTIONS)
    domain = cfg.DataConfig(**_pick(given, "data", "split", "text_column", "encoding"))
    general = None
    if given.get("general_data"):
        defaults = {k: flat_options.option_field(f"general_{k}").default for k in ("split", "text_column")}
        general = cfg.DataConfig(data=given["general_data"], encoding=given.get("general_encoding") or domain.encoding,
                                 **{**defaults, **{k: given[f"general_{k}"] for k in defaults if f"general_{k}" in given}})
    model_config = cfg.ModelConfig(**_pick(given, "model"))
    result = report(cfg.VocabConfig(model_config, domain, general, **_pick(given, "top", "max_documents")))
    if json_out:
        print(json.dumps(result.to_json()))
    else:
        summaries.print_vocab(result)


_VOCAB_OPTIONS = {"model", "data", "split", "text_column", "encoding", "general_data", "general_split", "general_text_column",
                  "general_encoding", "top", "max_documents"}


def _pick(options: dict, *names: str) -> dict:
    return {k: options[k] for k in names if k in options}


def probe(
    model: Model = None,
    compare: Annotated[Optional[str], typer.Option(help="A second model probed on the same folds (e.g. the base model)")] = None,
    data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    label_column: Annotated[Optional[str], tool_option(cfg.ProbeConfig, "label_column")] = None,
    seeds: Annotated[Optional[int], tool_option(cfg.ProbeConfig, "seeds")] = None,
    folds: Annotated[Optional[int], tool_option(cfg.ProbeConfig, "folds")] = None,
    max_rows: Annotated[Optional[int], tool_option(cfg.ProbeConfig, "max_rows")] = None,
    seen: Annotated[Optional[str], typer.Option(
        "--trained-on", "--seen",
        help="A corpus a compared model trained on, for a model whose folder does not say (one mlm-adapt trained does): "
             "labelled rows whose text it holds only ever train the probe, never test it")] = None,
    seen_text_column: Annotated[Optional[str], typer.Option(
        "--trained-on-text-column", "--seen-text-column", help="Text column of --trained-on (default: text)")] = None,
    finetune: Annotated[Optional[bool], tool_option(cfg.ProbeConfig, "finetune", "--finetune")] = None,
    finetune_epochs: Annotated[Optional[int], tool_option(cfg.ProbeConfig, "finetune_epochs")] = None,
    finetune_lr: Annotated[Optional[float], tool_option(cfg.ProbeConfig, "finetune_lr")] = None,
    batch_size: Annotated[Optional[int], tool_option(cfg.ProbeConfig, "batch_size")] = None,
    precision: PrecisionOpt = None, seed: Seed = None, allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None,
    json_out: JsonOut = False, config: ConfigFile = None,
) -> None:
    """Does MODEL (vs --compare) serve a labelled task? Out-of-fold probe scores and their paired difference.

    A frozen-encoder probe (mean-pooled embeddings + logistic regression), or with --finetune a short full
    fine-tune; with --compare, the paired difference and its 95% interval (significant only if it excludes 0).
    Rows whose text a model trained on (its folder's trained_on.json, or --trained-on) train the probe but are
    never tested."""
    from mlm_adapt.evaluation.probing import probe as run

    given = with_config_file(config, {
        "model": model, "compare": compare, "data": data, "split": split, "text_column": text_column, "encoding": encoding,
        "label_column": label_column, "seeds": seeds, "folds": folds, "max_rows": max_rows, "seen": seen,
        "seen_text_column": seen_text_column, "finetune": finetune, "finetune_epochs": finetune_epochs,
        "finetune_lr": finetune_lr, "batch_size": batch_size, "precision": precision, "seed": seed,
        "allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}, _PROBE_OPTIONS)
    trust = _pick(given, "allow_pickle", "trust_remote_code")
    names = [given.get("model", cfg.ModelConfig().model)] + ([given["compare"]] if given.get("compare") else [])
    settings = _pick(given, "label_column", "seeds", "folds", "max_rows", "seed", "finetune", "finetune_epochs",
                     "finetune_lr", "batch_size", "precision")
    probe_config = cfg.ProbeConfig(models=tuple(cfg.ModelConfig(model=name, **trust) for name in names),
                                   data=cfg.DataConfig(**_pick(given, "data", "split", "text_column", "encoding")), **settings)
    trained_on = None
    if given.get("seen"):
        column = given.get("seen_text_column") or cfg.DataConfig().text_column
        trained_on = cfg.DataConfig(data=given["seen"], text_column=column, encoding=probe_config.data.encoding)
    report = run(probe_config, trained_on=trained_on)
    if json_out:
        print(json.dumps(report))
    else:
        summaries.print_probe(report)


_PROBE_OPTIONS = {"model", "compare", "data", "split", "text_column", "encoding", "label_column", "seeds", "folds",
                  "max_rows", "seen", "seen_text_column", "finetune", "finetune_epochs", "finetune_lr", "batch_size",
                  "precision", "seed", "allow_pickle", "trust_remote_code"}


def fill_mask(
    texts: Annotated[list[str], typer.Argument(help="Texts with [MASK] or <mask>")],
    model: Model = None,
    compare: Annotated[Optional[str], typer.Option(help="A second model to show side by side (e.g. the base model)")] = None,
    top_k: Annotated[int, typer.Option(help="Predictions per mask")] = cfg.DEFAULT_TOP_K,
    allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
) -> None:
    """Top-k completions of each mask in TEXTS, optionally next to a second model's."""
    from mlm_adapt.evaluation.inference import fill_mask as run

    trust = {"allow_pickle": bool(allow_pickle), "trust_remote_code": bool(trust_remote_code)}
    names = [model or cfg.ModelConfig().model] + ([compare] if compare else [])
    results = {name: run(cfg.ModelConfig(model=name, **trust), texts, top_k) for name in names}
    if json_out:
        print(json.dumps(summaries.fill_mask_json(texts, results)))
    else:
        summaries.print_fill_mask(texts, results)


def demo(
    output: Annotated[Path, typer.Option(help="Folder for both stages and summary.json")] = Path("mlm-adapt-demo"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse an output folder that holds files")] = False,
    minutes: Annotated[float, typer.Option(
        help="Time budget: the stages are sized from this machine's measured step time")] = cfg.DEFAULT_DEMO_MINUTES,
    compare: Annotated[bool, typer.Option("--compare", help="Instead: compare dapt, tapt, curated, dapt+tapt and lora over "
                                          "3 training seeds from the demo's news model (OUTPUT/compare; about an hour "
                                          "on 2 CPU cores; rerun to resume)")] = False,
) -> None:
    """Offline demo: adapt a real pretrained encoder from news to movie reviews, then measure what it helped and cost."""
    from mlm_adapt import speed
    from mlm_adapt.system.runtime import has_accelerator_device

    speed.tune_process("gpu" if has_accelerator_device() else "cpu")  # before the step is timed
    if compare:
        from mlm_adapt.demo.comparison import run_comparison
        from mlm_adapt.outputs.comparison_report import print_comparison

        print_comparison(run_comparison(output, minutes))
        return
    from mlm_adapt.demo import run_demo

    summary = run_demo(output, overwrite, minutes=minutes)
    summaries.print_demo_summary(summary)


