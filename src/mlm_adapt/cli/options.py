"""Typer options built from the configuration: each flag's help is its config field's
docstring, its default the field's default, its panel the stage of the pipeline it sets.

Options default to ``None`` so that "not given" can be told apart from a value, which is
what lets a ``--config`` YAML file sit between defaults and flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import typer

from mlm_adapt import config as cfg
from mlm_adapt import flat_options
from mlm_adapt.errors import MlmAdaptError

# --help panels, in pipeline order. A flag not named here lands in typer's "Options".
PANELS = {
    "Model": ("model", "allow_pickle", "trust_remote_code"),
    "Data": ("data", "split", "text_column", "encoding", "document_boundary", "chunk_size", "remainder", "train_size",
             "eval_size", "streaming", "shuffle_buffer", "packing", "num_workers"),
    "Masking": ("masking", "mask_prob", "eval_masking", "eval_mask_prob"),
    "Training": ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_ratio", "precision",
                 "seed", "split_seed", "compile"),
    "Evaluations, checkpoints and the saved step": ("eval_steps", "eval_batch_size", "save_steps", "keep_checkpoints", "select",
                                                    "max_forgetting", "early_stop", "resume", "overwrite"),
    "Forgetting and the task": ("general_data", "general_split", "general_text_column", "general_encoding",
                                "replay_ratio", "task_data", "task_split", "task_text_column", "task_label_column",
                                "tapt", "hold_back_task", "task_probe", "task_test_share"),
    "LoRA adapters": ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "lora_train_head"),
    "Vocabulary": ("add_tokens", "add_tokens_file"),
    "Outputs and the Hub": ("output", "probes", "logging_steps", "report_to", "push_to_hub", "hub_private"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def help_text(text: str, default: Any = None, choices: Any = None) -> str:
    """``a|b: text (default: d)``: allowed values first, the default last."""
    text = text.rstrip(".")
    if choices is not None:
        text = f"{'|'.join(cfg.choices(choices))}: {text[:1].lower()}{text[1:]}"
    hidden = default is None or default is False or default is dataclasses.MISSING
    return text if hidden else f"{text} (default: {default})"


def option(name: str, *flags: str, choices: Any = None, default: str | None = None) -> Any:
    """A typer option for the run's config field ``name`` (a flat option: ``flat_options``);
    ``default`` overrides the shown default where the field's is a rule (None: by scheme)."""
    value = default if default is not None else flat_options.option_field(name).default
    return typer.Option(*flags, help=help_text(flat_options.option_help(name), value, choices), rich_help_panel=_PANEL_OF.get(name))


def tool_option(cls: type, name: str, *flags: str, panel: str | None = None) -> Any:
    """A typer option for field ``name`` of a command's own configuration class ``cls``."""
    default = {f.name: f.default for f in dataclasses.fields(cls)}[name]
    return typer.Option(*flags, help=help_text(cfg.field_docs(cls)[name], default), rich_help_panel=panel)


def with_config_file(config_file: Path | None, given: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """Defaults < YAML file < options given on the command line (``None`` = not given)."""
    options = flat_options.read_yaml_options(config_file) if config_file else {}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MlmAdaptError(f"unknown option(s) {', '.join(unknown)} in {config_file}; known: {', '.join(sorted(known))}")
    return {**options, **{k: v for k, v in given.items() if v is not None}}


Model = Annotated[Optional[str], option("model")]
Data = Annotated[Optional[str], option("data")]
Split = Annotated[Optional[str], option("split")]
TextColumn = Annotated[Optional[str], option("text_column")]
ChunkSize = Annotated[Optional[int], option("chunk_size")]
Remainder = Annotated[Optional[str], option("remainder", choices=cfg.Remainder)]
TrainSize = Annotated[Optional[int], option("train_size")]
EvalSize = Annotated[Optional[int], option("eval_size")]
Encoding = Annotated[Optional[str], option("encoding")]
DocumentBoundary = Annotated[Optional[str], option("document_boundary", choices=cfg.DocumentBoundary)]
Streaming = Annotated[Optional[bool], option("streaming", "--streaming")]
Packing = Annotated[Optional[bool], option("packing", "--packing")]
NumWorkers = Annotated[Optional[int], option("num_workers")]
ShuffleBuffer = Annotated[Optional[int], option("shuffle_buffer")]
MaskingOpt = Annotated[Optional[str], option("masking", "--masking", choices=cfg.Masking)]
MaskProb = Annotated[Optional[float], option("mask_prob", default=", ".join(f"{v} {k}" for k, v in cfg.DEFAULT_MASK_PROB.items()))]
EvalMasking = Annotated[Optional[str], option("eval_masking", choices=cfg.Masking)]
EvalMaskProb = Annotated[Optional[float], option("eval_mask_prob")]
BatchSize = Annotated[Optional[int], option("batch_size")]
PrecisionOpt = Annotated[Optional[str], option("precision", "--precision", choices=cfg.Precision)]
Seed = Annotated[Optional[int], option("seed")]
SplitSeed = Annotated[Optional[int], option("split_seed")]
AllowPickle = Annotated[Optional[bool], option("allow_pickle", "--allow-pickle")]
TrustRemote = Annotated[Optional[bool], option("trust_remote_code", "--trust-remote-code")]
GeneralData = Annotated[Optional[str], option("general_data")]
GeneralSplit = Annotated[Optional[str], option("general_split")]
GeneralTextColumn = Annotated[Optional[str], option("general_text_column")]
GeneralEncoding = Annotated[Optional[str], option("general_encoding")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML file of options; flags override it")]
