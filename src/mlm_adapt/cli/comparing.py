"""``compare``: recipes x training seeds from one base, measured on one split, judged by the
Multi-Bootstrap. Its run options are ``train``'s (the same flags, the same defaults)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

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
    EvalSize,
    GeneralData,
    GeneralEncoding,
    GeneralSplit,
    GeneralTextColumn,
    JsonOut,
    MaskingOpt,
    MaskProb,
    Model,
    PrecisionOpt,
    Split,
    SplitSeed,
    TextColumn,
    TrainSize,
    TrustRemote,
    help_text,
    option,
    tool_option,
    with_config_file,
)
from mlm_adapt.outputs import summaries

Compare = cfg.CompareConfig
PANEL = "Comparison"


def compare(
    recipes: Annotated[Optional[str], typer.Option(help=help_text(cfg.field_docs(Compare)["recipes"], ",".join(cfg.CompareConfig.recipes)),
                                                   rich_help_panel=PANEL)] = None,
    seeds: Annotated[Optional[int], tool_option(Compare, "seeds", panel=PANEL)] = None,
    output: Annotated[Path, typer.Option(help="Folder of the comparison: DIR/<recipe>/seed-<k> run folders, "
                                              "compare.json, report.html", rich_help_panel=PANEL)] = Path("mlm-adapt-compare"),
    pool: Annotated[Optional[str], tool_option(Compare, "pool", panel=PANEL)] = None,
    pool_text_column: Annotated[str, typer.Option(help="Text column of --pool", rich_help_panel=PANEL)] = "text",
    top: Annotated[Optional[int], tool_option(Compare, "top", panel=PANEL)] = None,
    max_forgetting: Annotated[Optional[float], tool_option(Compare, "max_forgetting", panel=PANEL)] = None,
    finetune: Annotated[Optional[bool], tool_option(Compare, "finetune", "--finetune", panel=PANEL)] = None,
    max_rows: Annotated[Optional[int], tool_option(Compare, "max_rows", panel=PANEL)] = None,
    plan: Annotated[Optional[bool], tool_option(Compare, "plan", "--plan", panel=PANEL)] = None,
    model: Model = None, data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    document_boundary: DocumentBoundary = None, chunk_size: ChunkSize = None, train_size: TrainSize = None,
    eval_size: EvalSize = None, masking: MaskingOpt = None, mask_prob: MaskProb = None,
    max_steps: Annotated[Optional[int], option("max_steps")] = None, batch_size: BatchSize = None,
    grad_accum: Annotated[Optional[int], option("grad_accum")] = None,
    lr: Annotated[Optional[float], option("lr")] = None,
    weight_decay: Annotated[Optional[float], option("weight_decay")] = None,
    warmup_ratio: Annotated[Optional[float], option("warmup_ratio")] = None,
    eval_batch_size: Annotated[Optional[int], option("eval_batch_size")] = None,
    precision: PrecisionOpt = None, split_seed: SplitSeed = None,
    general_data: GeneralData = None, general_split: GeneralSplit = None, general_text_column: GeneralTextColumn = None,
    general_encoding: GeneralEncoding = None,
    task_data: Annotated[Optional[str], option("task_data")] = None,
    task_split: Annotated[Optional[str], option("task_split")] = None,
    task_text_column: Annotated[Optional[str], option("task_text_column")] = None,
    task_label_column: Annotated[Optional[str], option("task_label_column")] = None,
    task_test_share: Annotated[Optional[float], option("task_test_share")] = None,
    lora_rank: Annotated[Optional[int], option("lora_rank")] = None,
    lora_alpha: Annotated[Optional[float], option("lora_alpha")] = None,
    allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
    config: ConfigFile = None,
) -> None:
    """Which recipe pays on the task, and would it pay again? Train every recipe with every seed from MODEL.

    Each run is a plain `train` run folder OUTPUT/<recipe>/seed-<k>: running the command again reuses finished runs
    and resumes interrupted ones. Base and runs are measured on the same held-out documents, masks and task rows;
    each recipe's difference from the base (and from each other recipe) gets a Multi-Bootstrap interval over seeds
    and rows, beside each seed's single-run result."""
    from mlm_adapt.comparison import compare as run
    from mlm_adapt.outputs.comparison_report import print_comparison

    run_options = {
        "model": model, "data": data, "split": split, "text_column": text_column, "encoding": encoding,
        "document_boundary": document_boundary, "chunk_size": chunk_size, "train_size": train_size, "eval_size": eval_size,
        "masking": masking, "mask_prob": mask_prob, "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum,
        "lr": lr, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "eval_batch_size": eval_batch_size,
        "precision": precision, "split_seed": split_seed, "general_data": general_data, "general_split": general_split,
        "general_text_column": general_text_column, "general_encoding": general_encoding, "task_data": task_data,
        "task_split": task_split, "task_text_column": task_text_column, "task_label_column": task_label_column,
        "task_test_share": task_test_share, "lora_rank": lora_rank, "lora_alpha": lora_alpha, "allow_pickle": allow_pickle,
        "trust_remote_code": trust_remote_code}
    own = {"recipes": recipes, "seeds": seeds, "top": top, "max_forgetting": max_forgetting, "finetune": finetune,
           "max_rows": max_rows, "plan": plan}
    given = with_config_file(config, {**run_options, **own}, set(run_options) | set(own))
    compare_options = {k: given.pop(k) for k in list(given) if k in own}
    has_domain = "data" in given
    if not has_domain and "task_data" in given:  # no domain corpus: the task's texts are the runs' shared corpus
        given.update(data=given["task_data"], split=given.get("task_split", "train"),
                     text_column=given.get("task_text_column") or given.get("text_column", "text"))
    train_config = flat_options.from_options(cfg.TrainConfig, {**given, "output": output})
    if isinstance(compare_options.get("recipes"), str):
        compare_options["recipes"] = tuple(r.strip() for r in compare_options["recipes"].split(",") if r.strip())
    pool_config = cfg.DataConfig(pool, text_column=pool_text_column, encoding=train_config.data.encoding) if pool else None
    result = run(cfg.CompareConfig(run=train_config, domain=train_config.data if has_domain else None, pool=pool_config,
                                   **compare_options))
    result["folder"] = str(output / "compare.json")
    if json_out:
        print(json.dumps(result))
    elif "plan" in result:
        summaries.out.print("\n".join(result["plan"]), markup=False)
    else:
        print_comparison(result)
