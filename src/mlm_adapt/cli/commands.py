"""``train`` and ``evaluate``: each turns its options into a config and calls one library
function. Their flags are the flat options of ``TrainConfig`` / ``EvalConfig`` (``options``).
"""

from __future__ import annotations

import json
import os
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
    MaskingOpt,
    MaskProb,
    Model,
    NumWorkers,
    Packing,
    PrecisionOpt,
    Remainder,
    Seed,
    ShuffleBuffer,
    Split,
    SplitSeed,
    Streaming,
    TextColumn,
    TrainSize,
    TrustRemote,
    help_text,
    option,
)
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.outputs import summaries

out = summaries.out  # one console for every command


def train(
    ctx: typer.Context,
    model: Model = None, data: Data = None,
    split: Split = None, text_column: TextColumn = None, chunk_size: ChunkSize = None, remainder: Remainder = None,
    masking: MaskingOpt = None, mask_prob: MaskProb = None, eval_masking: EvalMasking = None, eval_mask_prob: EvalMaskProb = None,
    train_size: TrainSize = None, eval_size: EvalSize = None, encoding: Encoding = None, document_boundary: DocumentBoundary = None,
    streaming: Streaming = None, shuffle_buffer: ShuffleBuffer = None, packing: Packing = None, num_workers: NumWorkers = None,
    epochs: Annotated[Optional[int], option("epochs")] = None,
    max_steps: Annotated[Optional[int], option("max_steps")] = None,
    batch_size: BatchSize = None,
    grad_accum: Annotated[Optional[int], option("grad_accum")] = None,
    lr: Annotated[Optional[float], option("lr")] = None,
    weight_decay: Annotated[Optional[float], option("weight_decay")] = None,
    warmup_ratio: Annotated[Optional[float], option("warmup_ratio")] = None,
    logging_steps: Annotated[Optional[int], option("logging_steps")] = None,
    precision: PrecisionOpt = None, seed: Seed = None, split_seed: SplitSeed = None,
    output: Annotated[Optional[Path], option("output")] = None,
    probe: Annotated[Optional[list[str]], option("probes", "--probe")] = None,
    compile: Annotated[Optional[bool], option("compile", "--compile")] = None,
    report_to: Annotated[Optional[str], option("report_to", choices=cfg.ReportTo)] = None,
    push_to_hub: Annotated[Optional[str], option("push_to_hub")] = None,
    hub_private: Annotated[Optional[bool], option("hub_private", "--hub-private")] = None,
    save_steps: Annotated[Optional[int], option("save_steps")] = None,
    eval_steps: Annotated[Optional[int], option("eval_steps")] = None,
    eval_batch_size: Annotated[Optional[int], option("eval_batch_size")] = None,
    keep_checkpoints: Annotated[Optional[int], option("keep_checkpoints")] = None,
    select: Annotated[Optional[str], option("select", choices=cfg.Select)] = None,
    max_forgetting: Annotated[Optional[float], option("max_forgetting")] = None,
    early_stop: Annotated[Optional[int], option("early_stop")] = None,
    resume: Annotated[Optional[bool], option("resume", "--resume")] = None,
    overwrite: Annotated[Optional[bool], option("overwrite", "--overwrite")] = None,
    general_data: GeneralData = None, general_split: GeneralSplit = None, general_text_column: GeneralTextColumn = None,
    general_encoding: GeneralEncoding = None,
    replay_ratio: Annotated[Optional[float], option("replay_ratio")] = None,
    task_data: Annotated[Optional[str], option("task_data")] = None,
    task_split: Annotated[Optional[str], option("task_split")] = None,
    task_text_column: Annotated[Optional[str], option("task_text_column")] = None,
    task_label_column: Annotated[Optional[str], option("task_label_column")] = None,
    tapt: Annotated[Optional[bool], option("tapt", "--tapt")] = None,
    hold_back_task: Annotated[Optional[bool], option("hold_back_task", "--hold-back-task")] = None,
    task_probe: Annotated[Optional[bool], option("task_probe", "--task-probe/--no-task-probe")] = None,
    task_test_share: Annotated[Optional[float], option("task_test_share")] = None,
    lora_rank: Annotated[Optional[int], option("lora_rank")] = None,
    lora_alpha: Annotated[Optional[float], option("lora_alpha")] = None,
    lora_dropout: Annotated[Optional[float], option("lora_dropout")] = None,
    lora_targets: Annotated[Optional[str], option("lora_targets")] = None,
    lora_train_head: Annotated[Optional[bool], option("lora_train_head", "--lora-train-head")] = None,
    add_tokens: Annotated[Optional[int], option("add_tokens")] = None,
    add_tokens_file: Annotated[Optional[Path], option("add_tokens_file")] = None,
    allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None,
    config: ConfigFile = None,
    recipe: Annotated[Optional[str], typer.Option(
        help="Train a named recipe's runs instead (dapt, tapt, dapt+tapt, lora, NAME+lora; see `mlm-adapt compare`), "
             "its last stage into OUTPUT")] = None,
) -> None:
    """Continue masked-LM training of MODEL on DATA and save the adapted model to OUTPUT."""
    from mlm_adapt import speed
    from mlm_adapt.system.runtime import has_accelerator_device
    from mlm_adapt.training.loop import train as run

    speed.tune_process("gpu" if has_accelerator_device() else "cpu")  # 18-24% of a CPU step were page faults
    options = _config_options(ctx, probe=lambda texts: tuple(texts) if texts else None)
    resolved = flat_options.resolve(cfg.TrainConfig, options, config)
    if recipe:
        from mlm_adapt import recipes

        given = {**(flat_options.read_yaml_options(config) if config else {}), **{k: v for k, v in options.items() if v is not None}}
        metrics = recipes.train(recipe, resolved, resolved.data if "data" in given else None)[-1]
    else:
        metrics = run(resolved)
    if _is_main_process():
        summaries.print_train_summary(metrics, resolved.output)


# Command-line parameters that are not config options, or are named differently there.
_NOT_OPTIONS = {"config", "recipe", "json_out", "pseudo", "max_sentences", "compare", "pll", "per_text", "words", "words_by"}
_RENAMED = {"probe": "probes"}


def _config_options(ctx: typer.Context, **convert) -> dict[str, Any]:
    """The command's parsed parameters as flat config options (``None`` = not given)."""
    options = {}
    for name, value in ctx.params.items():
        if name in _NOT_OPTIONS:
            continue
        options[_RENAMED.get(name, name)] = convert[name](value) if name in convert else value
    return options


def _is_main_process() -> bool:
    """Under torchrun / accelerate launch, one process prints the summary."""
    return os.environ.get("RANK", "0") == "0"


def evaluate(
    ctx: typer.Context,
    model: Model = None, data: Data = None, split: Split = None, text_column: TextColumn = None,
    chunk_size: ChunkSize = None, remainder: Remainder = None, eval_size: EvalSize = None, encoding: Encoding = None,
    document_boundary: DocumentBoundary = None, streaming: Streaming = None, packing: Packing = None, num_workers: NumWorkers = None,
    eval_masking: EvalMasking = None, eval_mask_prob: EvalMaskProb = None, batch_size: BatchSize = None,
    precision: PrecisionOpt = None, seed: Seed = None, split_seed: SplitSeed = None, allow_pickle: AllowPickle = None,
    trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
    pseudo: Annotated[bool, typer.Option(
        "--pseudo", help="Pseudo-perplexity instead: every token of each text masked in turn, each text on its own")] = False,
    pll: Annotated[str, typer.Option(help="With --pseudo: word-l2r (Kauf & Ivanova 2023) or original (Salazar et al. 2020)")] = "word-l2r",
    per_text: Annotated[Optional[Path], typer.Option(
        help="With --pseudo: write each text's score here as JSON lines (index, nll, tokens)")] = None,
    max_sentences: Annotated[int, typer.Option(
        help="With --pseudo: held-out texts scored (each costs one forward per token)")] = cfg.DEFAULT_PSEUDO_TEXTS,
    compare: Annotated[Optional[str], typer.Option(
        help="A base model scored on the same tokens and masks: the ratio MODEL / BASE and its paired interval")] = None,
    words: Annotated[int, typer.Option(
        help="With --compare: list the N whole words whose NLL fell most and rose most (0: none)")] = 0,
    words_by: Annotated[str, typer.Option(help=help_text(
        "With --words: rank by total change (frequent words lead) or mean change per occurrence "
        f"(words seen {cfg.WORD_MIN_OCCURRENCES} times or more)", choices=cfg.WordRanking))] = "total",
) -> None:
    """Perplexity of MODEL on the held-out documents of DATA (the split `train` uses, same masks)."""
    from mlm_adapt.evaluation.perplexity import comparison_summary, evaluation_summary, pseudo_summary
    from mlm_adapt.evaluation.scoring import evaluate as run
    from mlm_adapt.evaluation.scoring import pseudo_perplexity

    config = flat_options.resolve(cfg.EvalConfig, _config_options(ctx))
    if words and not compare:
        raise MlmAdaptError("--words lists what changed against a base model: give --compare BASE")
    if words_by != "total" and not words:
        raise MlmAdaptError("--words-by ranks the --words list: give --words N")
    if compare and not pseudo:
        _evaluate_against(config, compare, json_out, words, words_by)
        return
    if pseudo:
        if max_sentences < 1:
            raise MlmAdaptError(f"--max-sentences must be a positive number, not {max_sentences}")
        if pll not in ("word-l2r", "original"):
            raise MlmAdaptError(f"--pll must be word-l2r or original, not {pll!r}")
        base = _base_config(config, compare) if compare else None
        result, per_text_scores, base_result = pseudo_perplexity(config, max_sentences, word_l2r=pll == "word-l2r", base=base)
        summary = {**pseudo_summary(result, config.data_seed()), "pll": pll, "texts": len(per_text_scores)}
        if base_result is not None:
            summary["comparison"] = comparison_summary(base_result, result, config.data_seed())
        if per_text is not None and _is_main_process():
            summaries.write_jsonl(per_text, per_text_scores)
        if json_out and _is_main_process():
            print(json.dumps(summary))
        elif _is_main_process():
            low, high = summary["pseudo_perplexity_interval"]
            out.print(f"pseudo-perplexity {summary['pseudo_perplexity']:.4f} [{summaries.interval_label(summary)} {low:.4f}, "
                      f"{high:.4f} over {summary['interval_resamples']}] over {summary['scored_tokens']} tokens of "
                      f"{summary['texts']} texts (PLL-{pll})", markup=False)
            if base_result is not None:
                _print_comparison(summary["comparison"], "pseudo-perplexity")
        return
    summary = evaluation_summary(run(config), config.data_seed())
    if not _is_main_process():
        return
    if json_out:
        print(json.dumps(summary))
    else:
        low, high = summary["perplexity_interval"]
        out.print(f"perplexity {summary['perplexity']:.4f} [{summaries.interval_label(summary)} {low:.4f}, {high:.4f} over "
                  f"{summary['interval_resamples']}] (eval loss {summary['eval_loss']:.4f} over "
                  f"{summary['masked_tokens']} masked tokens; {summary['bits_per_byte']:.4f} bits per byte)", markup=False)


def _base_config(config, base: str) -> cfg.ModelConfig:
    """--compare's model, trusted as far as --model is."""
    return cfg.ModelConfig(base, allow_pickle=config.model.allow_pickle, trust_remote_code=config.model.trust_remote_code)


def _evaluate_against(config, base: str, json_out: bool, words: int, words_by: str) -> None:
    from mlm_adapt.evaluation.perplexity import comparison_summary, evaluation_summary
    from mlm_adapt.evaluation.scoring import evaluate_against

    if words < 0:
        raise MlmAdaptError(f"--words must be 0 or a positive number, not {words}")
    before, after, ledger = evaluate_against(config, _base_config(config, base), words, words_by)
    summary = {**evaluation_summary(after, config.data_seed()), "comparison": comparison_summary(before, after, config.data_seed())}
    if ledger is not None:
        summary["words"] = ledger
    if not _is_main_process():
        return
    if json_out:
        print(json.dumps(summary))
        return
    out.print(f"perplexity {summary['perplexity']:.4f} on {summary['masked_tokens']} masked tokens", markup=False)
    _print_comparison(summary["comparison"], "perplexity")
    if ledger is not None:
        summaries.print_word_ledger(ledger)


def _print_comparison(c: dict[str, Any], measure: str) -> None:
    """The paired verdict: the ratio MODEL / BASE, its interval, and whether it excludes 1."""
    verdict = {True: "significant", False: "not significant", None: f"no verdict: {c['interval_caveat']}"}[c["significant"]]
    label = "interval" if c["interval_caveat"] else "95% interval"
    out.print(f"base {measure} {c['base_perplexity']:.4f}; ratio {c['ratio']:.4f} [{label} {c['interval'][0]:.4f}, "
              f"{c['interval'][1]:.4f} over {c['interval_resamples']}]: {verdict}", markup=False)


