"""The levers around a run: ``blend`` (base and adapted weights interpolated, one blend
saved), ``assess`` (is a corpus worth adapting to, before a long run) and ``select`` (the
documents of a pool nearest a task's texts, to adapt on)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlm_adapt import config as cfg
from mlm_adapt import flat_options
from mlm_adapt.cli.options import (
    AllowPickle,
    BatchSize,
    ChunkSize,
    ConfigFile,
    Data,
    DocumentBoundary,
    Encoding,
    EvalMasking,
    EvalMaskProb,
    EvalSize,
    GeneralData,
    GeneralEncoding,
    GeneralSplit,
    GeneralTextColumn,
    JsonOut,
    Model,
    PrecisionOpt,
    Seed,
    Split,
    Streaming,
    TextColumn,
    TrustRemote,
    option,
    tool_option,
    with_config_file,
)
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.outputs import summaries

# What a run's config.yaml may set for blend: the data, its held-out set and masks, general and task data.
# Not what may run code (--allow-pickle, --trust-remote-code): a folder's file never decides that.
_RUN_OPTIONS = {"data", "split", "text_column", "encoding", "document_boundary", "chunk_size", "remainder", "eval_size",
                "streaming", "packing", "eval_masking", "eval_mask_prob", "batch_size", "precision", "seed", "split_seed", "general_data",
                "general_split", "general_text_column", "general_encoding", "task_data", "task_split", "task_text_column",
                "task_label_column"}
_TRUST_OPTIONS = {"allow_pickle", "trust_remote_code"}


def blend(
    base: Annotated[str, tool_option(cfg.BlendConfig, "base", "--base")],
    adapted: Annotated[str, tool_option(cfg.BlendConfig, "adapted", "--adapted")],
    alphas: Annotated[Optional[str], typer.Option(help="Blend weights a in [0, 1], comma-separated (default: "
                                                       f"{','.join(f'{a:g}' for a in cfg.BlendConfig.alphas)})")] = None,
    output: Annotated[Optional[Path], tool_option(cfg.BlendConfig, "output")] = None,
    pick: Annotated[Optional[float], tool_option(cfg.BlendConfig, "pick")] = None,
    max_forgetting: Annotated[Optional[float], tool_option(cfg.BlendConfig, "max_forgetting")] = None,
    overwrite: Annotated[Optional[bool], tool_option(cfg.BlendConfig, "overwrite", "--overwrite")] = None,
    data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    document_boundary: DocumentBoundary = None, chunk_size: ChunkSize = None, eval_size: EvalSize = None,
    eval_masking: EvalMasking = None, eval_mask_prob: EvalMaskProb = None, general_data: GeneralData = None,
    general_split: GeneralSplit = None, general_text_column: GeneralTextColumn = None, general_encoding: GeneralEncoding = None,
    task_data: Annotated[Optional[str], option("task_data")] = None,
    task_text_column: Annotated[Optional[str], option("task_text_column")] = None,
    task_label_column: Annotated[Optional[str], option("task_label_column")] = None,
    batch_size: BatchSize = None, precision: PrecisionOpt = None, seed: Seed = None, allow_pickle: AllowPickle = None,
    trust_remote_code: TrustRemote = None, json_out: JsonOut = False, config: ConfigFile = None,
) -> None:
    """Blend base and adapted weights, (1 - a) * base + a * adapted, measure each blend, save one.

    Each blend is measured on the held-out documents and masks of the adapted run (its config.yaml supplies
    the data options); the picked one is saved as an ordinary model folder."""
    from mlm_adapt.training.blending import blend as run

    given = with_config_file(config, {
        "data": data, "split": split, "text_column": text_column, "encoding": encoding, "document_boundary": document_boundary,
        "chunk_size": chunk_size, "eval_size": eval_size, "eval_masking": eval_masking, "eval_mask_prob": eval_mask_prob,
        "general_data": general_data, "general_split": general_split, "general_text_column": general_text_column,
        "general_encoding": general_encoding, "task_data": task_data, "task_text_column": task_text_column,
        "task_label_column": task_label_column, "batch_size": batch_size, "precision": precision, "seed": seed,
        "allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}, _RUN_OPTIONS | _TRUST_OPTIONS)
    run_config = flat_options.from_options(cfg.TrainConfig, {**_run_options(adapted), **given, "model": adapted})
    task = run_config.task_probe_config()
    summary = run(cfg.BlendConfig(
        base=cfg.ModelConfig(base, run_config.model.allow_pickle, run_config.model.trust_remote_code), adapted=run_config.model,
        data=run_config.data, masking=run_config.masking, alphas=_alphas(alphas) if alphas else cfg.BlendConfig.alphas,
        general=run_config.general_data_config(), task=cfg.TaskConfig(task.data, task.label_column) if task else None,
        output=output, pick=pick, max_forgetting=max_forgetting, overwrite=bool(overwrite), batch_size=run_config.batch_size,
        precision=run_config.precision, seed=run_config.data_seed()))
    if json_out:
        print(json.dumps(summary))
    else:
        summaries.print_blend(summary)


def _run_options(folder: str) -> dict[str, Any]:
    """The data options of the run that wrote ``folder`` (its config.yaml), if it is one."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return {}
    return {k: v for k, v in flat_options.read_yaml_options(path).items() if k in _RUN_OPTIONS}


def _alphas(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise MlmAdaptError(f"--alphas must be numbers separated by commas (0,0.5,1), not {text!r}") from None


def assess(
    model: Model = None, data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    document_boundary: DocumentBoundary = None, chunk_size: ChunkSize = None, eval_size: EvalSize = None,
    general_data: GeneralData = None, general_split: GeneralSplit = None, general_text_column: GeneralTextColumn = None,
    general_encoding: GeneralEncoding = None,
    max_documents: Annotated[Optional[int], tool_option(cfg.AssessConfig, "max_documents")] = None,
    batch_size: BatchSize = None, precision: PrecisionOpt = None, seed: Seed = None, allow_pickle: AllowPickle = None,
    trust_remote_code: TrustRemote = None, json_out: JsonOut = False, config: ConfigFile = None,
) -> None:
    """Before a long run: is DATA worth adapting MODEL to, and what would a run cost?

    MODEL's perplexity on held-out DATA (and general text), how its tokenizer splits DATA, duplicates,
    document lengths, training chunks, this machine's step time, and a recommendation."""
    from mlm_adapt.training.assessment import assess as run

    options = {"model": model, "data": data, "split": split, "text_column": text_column, "encoding": encoding,
               "document_boundary": document_boundary, "chunk_size": chunk_size, "eval_size": eval_size,
               "general_data": general_data, "general_split": general_split, "general_text_column": general_text_column,
               "general_encoding": general_encoding, "max_documents": max_documents, "batch_size": batch_size,
               "precision": precision, "seed": seed, "allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    given = with_config_file(config, options, set(options))
    run_config = flat_options.from_options(cfg.TrainConfig, {k: v for k, v in given.items() if k != "max_documents"})
    sizes = {"max_documents": given["max_documents"]} if "max_documents" in given else {}
    result = run(cfg.AssessConfig(model=run_config.model, data=run_config.data, general=run_config.general_data_config(),
                                  batch_size=run_config.batch_size, precision=run_config.precision, seed=run_config.data_seed(), **sizes))
    if json_out:
        print(json.dumps(result))
    else:
        summaries.print_assessment(result)


def select(
    pool: Annotated[str, typer.Option(help=cfg.field_docs(cfg.SelectConfig)["pool"])],
    like: Annotated[str, typer.Option(help=cfg.field_docs(cfg.SelectConfig)["like"])],
    output: Annotated[Path, typer.Option(help=cfg.field_docs(cfg.SelectConfig)["output"])],
    top: Annotated[int, tool_option(cfg.SelectConfig, "top")] = cfg.SelectConfig.top,
    model: Model = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    document_boundary: DocumentBoundary = None, streaming: Streaming = None,
    like_text_column: Annotated[str, typer.Option(help="Text column of --like")] = "text",
    max_length: Annotated[int, tool_option(cfg.SelectConfig, "max_length")] = cfg.SelectConfig.max_length,
    batch_size: Annotated[int, tool_option(cfg.SelectConfig, "batch_size")] = cfg.SelectConfig.batch_size,
    precision: PrecisionOpt = None, overwrite: Annotated[bool, tool_option(cfg.SelectConfig, "overwrite", "--overwrite")] = False,
    allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
) -> None:
    """Pick the TOP documents of POOL nearest the texts of LIKE (curated task-adaptive data for train --data).

    Cosine similarity of MODEL's mean-pooled embeddings, each pool document scored by its nearest task text;
    exact and near copies of task texts are never picked. Writes OUTPUT as JSON lines, nearest first."""
    from mlm_adapt.training.curation import select as run

    pool_options = {"data": pool, "split": split, "text_column": text_column, "encoding": encoding,
                    "document_boundary": document_boundary, "streaming": streaming}
    pool_config = cfg.DataConfig(**{k: v for k, v in pool_options.items() if v is not None})
    like_config = cfg.DataConfig(data=like, text_column=like_text_column, encoding=pool_config.encoding)
    trust = {"allow_pickle": bool(allow_pickle), "trust_remote_code": bool(trust_remote_code)}
    summary = run(cfg.SelectConfig(pool=pool_config, like=like_config, output=output, top=top,
                                   model=cfg.ModelConfig(model or cfg.ModelConfig().model, **trust), max_length=max_length,
                                   batch_size=batch_size, precision=precision or "auto", overwrite=overwrite))
    if json_out:
        print(json.dumps(summary))
    else:
        summaries.print_selection(summary)
