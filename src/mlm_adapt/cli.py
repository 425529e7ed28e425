"""The ``mlm-adapt`` command: a thin typer layer over the library.

Each command turns its options into a config and calls one library function.
Options default to ``None`` so that "not given" can be told apart from a value,
which is what lets a ``--config`` YAML file sit between defaults and flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlm_adapt import config as cfg, options as flat_options, summaries
from mlm_adapt.errors import MlmAdaptError, TrainingInterrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Domain-adapt a masked language model on your text; check perplexity and fill-mask.",
)
out = summaries.out  # one console for every command

def _option(name: str, text: str, *flags: str, choices: Any = None, default: str | None = None) -> Any:
    """A typer option whose help ends with the config's default (and allowed values): the
    config dataclasses are the one source of both, so help cannot drift from behaviour."""
    value = flat_options.option_field(name).default
    if default is None and not (value is None or value is False or value is dataclasses.MISSING):
        default = str(value)
    allowed = f"{'|'.join(cfg.choices(choices))}: " if choices is not None else ""
    suffix = f" (default: {default})" if default is not None else ""
    return typer.Option(*flags, help=f"{allowed}{text}{suffix}")


Model = Annotated[Optional[str], _option("model", "Hub model id or local folder")]
Data = Annotated[Optional[str], _option("data", "Hub dataset id[:config], a .txt/.jsonl/.json/.csv/.parquet file, or a folder of .txt")]
Split = Annotated[Optional[str], _option("split", "Split or slice, e.g. 'train[:5000]'")]
TextColumn = Annotated[Optional[str], _option("text_column", "Column with the text; dotted path for nested fields (answers.text)")]
ChunkSize = Annotated[Optional[int], _option("chunk_size", "Tokens per chunk, special tokens included")]
Remainder = Annotated[Optional[str], _option("remainder", "what to do with the last, short chunk", choices=cfg.Remainder)]
TrainSize = Annotated[Optional[int], _option("train_size", "Training chunks to sample (not with --streaming)")]
EvalSize = Annotated[Optional[int], _option("eval_size", "Evaluation chunks to sample")]
Encoding = Annotated[Optional[str], _option("encoding", "Text encoding of local files")]
DocumentBoundary = Annotated[Optional[str], _option(
    "document_boundary", "where a .txt document ends (held out and resampled whole)", choices=cfg.DocumentBoundary,
    default="line for a file, file for a folder")]
Streaming = Annotated[Optional[bool], _option("streaming", "Read the data as a stream, never all in memory (needs --max-steps to train)", "--streaming")]
Packing = Annotated[Optional[bool], _option("packing", "No attention across the documents a chunk packs together (short documents)", "--packing")]
NumWorkers = Annotated[Optional[int], _option("num_workers", "Processes that tokenize (0: this one, whose tokenizer already uses every core)")]
ShuffleBuffer = Annotated[Optional[int], _option("shuffle_buffer", "With --streaming: chunks held for shuffling")]
MaskingOpt = Annotated[Optional[str], _option("masking", "how training inputs are masked", "--masking", choices=cfg.Masking)]
MaskProb = Annotated[Optional[float], _option(
    "mask_prob", "Masking rate", default=", ".join(f"{v} {k}" for k, v in cfg.DEFAULT_MASK_PROB.items()))]
EvalMasking = Annotated[Optional[str], _option("eval_masking", "masking of the evaluation set", choices=cfg.Masking)]
EvalMaskProb = Annotated[Optional[float], _option("eval_mask_prob", "Masking rate of the evaluation set")]
BatchSize = Annotated[Optional[int], _option("batch_size", "Chunks per device per micro-batch")]
PrecisionOpt = Annotated[Optional[str], _option("precision", "numeric precision of training and evaluation", "--precision", choices=cfg.Precision)]
Seed = Annotated[Optional[int], _option("seed", "Seed for split, masks and order")]
AllowPickle = Annotated[Optional[bool], _option("allow_pickle", "Load .bin (pickle) weights; they can run code", "--allow-pickle")]
TrustRemote = Annotated[Optional[bool], _option("trust_remote_code", "Run model code from the Hub repo", "--trust-remote-code")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=lambda v: _print_version(v), help="Print the version and exit")] = False,
) -> None:
    """``--debug`` is read by :func:`main` before typer parses anything."""


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import version

        print(f"mlm-adapt {version('mlm-adapt')}")
        raise typer.Exit(0)


@app.command()
def train(
    ctx: typer.Context,
    model: Model = None, data: Data = None, output: Annotated[Optional[Path], _option("output", "Folder for the adapted model")] = None,
    split: Split = None, text_column: TextColumn = None, chunk_size: ChunkSize = None, remainder: Remainder = None,
    masking: MaskingOpt = None, mask_prob: MaskProb = None, eval_masking: EvalMasking = None, eval_mask_prob: EvalMaskProb = None,
    train_size: TrainSize = None, eval_size: EvalSize = None, encoding: Encoding = None, document_boundary: DocumentBoundary = None,
    streaming: Streaming = None, shuffle_buffer: ShuffleBuffer = None, packing: Packing = None, num_workers: NumWorkers = None,
    epochs: Annotated[Optional[int], _option("epochs", "Passes over the training chunks")] = None,
    max_steps: Annotated[Optional[int], _option("max_steps", "Stop after this many optimizer steps (overrides --epochs)")] = None,
    batch_size: BatchSize = None,
    grad_accum: Annotated[Optional[int], _option("grad_accum", "Micro-batches per optimizer step")] = None,
    lr: Annotated[Optional[float], _option("lr", "Peak learning rate")] = None,
    weight_decay: Annotated[Optional[float], _option("weight_decay", "AdamW weight decay")] = None,
    warmup_ratio: Annotated[Optional[float], _option("warmup_ratio", "Share of steps for linear warm-up")] = None,
    logging_steps: Annotated[Optional[int], _option("logging_steps", "Record the training loss every N steps")] = None,
    precision: PrecisionOpt = None, seed: Seed = None,
    probe: Annotated[Optional[list[str]], _option("probes", "A text with [MASK] for the report's before/after table (repeatable)", "--probe")] = None,
    compile: Annotated[Optional[bool], _option("compile", "torch.compile the encoder (slower on small CPUs; see docs/performance.md)", "--compile")] = None,
    report_to: Annotated[Optional[str], _option("report_to", "experiment tracker", choices=cfg.ReportTo)] = None,
    push_to_hub: Annotated[Optional[str], _option("push_to_hub", "Upload the final folder to this Hub repo (user/name)")] = None,
    hub_private: Annotated[Optional[bool], _option("hub_private", "Create the Hub repo as private", "--hub-private")] = None,
    save_steps: Annotated[Optional[int], _option("save_steps", "Also checkpoint every N steps (always at epoch ends)")] = None,
    eval_steps: Annotated[Optional[int], _option("eval_steps", "Also evaluate every N steps (always at epoch ends and the last step)")] = None,
    keep_checkpoints: Annotated[Optional[int], _option("keep_checkpoints", "Keep the newest K checkpoints")] = None,
    resume: Annotated[Optional[bool], _option("resume", "Continue from the newest complete checkpoint in --output", "--resume")] = None,
    overwrite: Annotated[Optional[bool], _option("overwrite", "Write into an output folder that holds files", "--overwrite")] = None,
    general_data: Annotated[Optional[str], _option("general_data", "General-domain text held out to measure forgetting (same forms as --data)")] = None,
    general_split: Annotated[Optional[str], _option("general_split", "Split of --general-data")] = None,
    general_text_column: Annotated[Optional[str], _option("general_text_column", "Text column of --general-data")] = None,
    general_encoding: Annotated[Optional[str], _option("general_encoding", "Text encoding of --general-data (default: --encoding)")] = None,
    replay_ratio: Annotated[Optional[float], _option("replay_ratio", "Share of training chunks drawn from --general-data's training side (limits forgetting)")] = None,
    task_data: Annotated[Optional[str], _option("task_data", "Labelled task data (csv/jsonl/parquet/Hub): end with a probe of base vs adapted model")] = None,
    task_split: Annotated[Optional[str], _option("task_split", "Split of --task-data")] = None,
    task_text_column: Annotated[Optional[str], _option("task_text_column", "Text column of --task-data (default: --text-column)")] = None,
    task_label_column: Annotated[Optional[str], _option("task_label_column", "Label column of --task-data")] = None,
    add_tokens: Annotated[Optional[int], _option("add_tokens", "Add the N domain words whose splitting costs most as whole tokens (see `mlm-adapt vocab`)")] = None,
    add_tokens_file: Annotated[Optional[Path], _option("add_tokens_file", "Add the words of this file (one per line) as whole tokens")] = None,
    allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options; flags override it")] = None,
) -> None:
    """Continue masked-LM training of MODEL on DATA and save the adapted model to OUTPUT."""
    from mlm_adapt.runtime import has_accelerator_device, tune_process_for_training
    from mlm_adapt.training import train as run

    tune_process_for_training("gpu" if has_accelerator_device() else "cpu")  # 18-24% of a CPU step were page faults
    options = _config_options(ctx, probe=lambda texts: tuple(texts) if texts else None)
    resolved = flat_options.resolve(cfg.TrainConfig, options, config)
    metrics = run(resolved)
    if _is_main_process():
        summaries.print_train_summary(metrics, resolved.output)


# Command-line parameters that are not config options, or are named differently there.
_NOT_OPTIONS = {"config", "json_out", "pseudo", "max_sentences", "compare", "pll", "per_text"}
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


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Model = None, data: Data = None, split: Split = None, text_column: TextColumn = None,
    chunk_size: ChunkSize = None, remainder: Remainder = None, eval_size: EvalSize = None, encoding: Encoding = None,
    document_boundary: DocumentBoundary = None, streaming: Streaming = None, packing: Packing = None, num_workers: NumWorkers = None,
    eval_masking: EvalMasking = None, eval_mask_prob: EvalMaskProb = None, batch_size: BatchSize = None,
    precision: PrecisionOpt = None, seed: Seed = None, allow_pickle: AllowPickle = None,
    trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
    pseudo: Annotated[bool, typer.Option("--pseudo", help="Pseudo-perplexity instead: every token of each text masked in turn, each text on its own")] = False,
    pll: Annotated[str, typer.Option(help="With --pseudo: word-l2r (Kauf & Ivanova 2023) or original (Salazar et al. 2020)")] = "word-l2r",
    per_text: Annotated[Optional[Path], typer.Option(help="With --pseudo: write each text's score here as JSON lines (index, nll, tokens)")] = None,
    max_sentences: Annotated[int, typer.Option(help="With --pseudo: held-out texts scored (each costs one forward per token)")] = 100,
    compare: Annotated[Optional[str], typer.Option(help="A base model scored on the same tokens and masks: the ratio MODEL / BASE and its paired interval")] = None,
) -> None:
    """Perplexity of MODEL on the held-out documents of DATA (the split `train` uses, same masks)."""
    from mlm_adapt.evaluation import evaluate as run, evaluation_summary, pseudo_perplexity, pseudo_summary

    config = flat_options.resolve(cfg.EvalConfig, _config_options(ctx))
    if compare and pseudo:
        raise MlmAdaptError("--compare works with the masked perplexity; drop --pseudo")
    if compare:
        _evaluate_against(config, compare, json_out)
        return
    if pseudo:
        if max_sentences < 1:
            raise MlmAdaptError(f"--max-sentences must be a positive number, not {max_sentences}")
        if pll not in ("word-l2r", "original"):
            raise MlmAdaptError(f"--pll must be word-l2r or original, not {pll!r}")
        result, per_text_scores = pseudo_perplexity(config, max_sentences, word_l2r=pll == "word-l2r")
        summary = {**pseudo_summary(result, config.seed), "pll": pll, "texts": len(per_text_scores)}
        if per_text is not None and _is_main_process():
            summaries.write_jsonl(per_text, per_text_scores)
        if json_out and _is_main_process():
            print(json.dumps(summary))
        elif _is_main_process():
            low, high = summary["pseudo_perplexity_interval"]
            out.print(f"pseudo-perplexity {summary['pseudo_perplexity']:.4f} [{summaries.interval_label(summary)} {low:.4f}, "
                      f"{high:.4f} over {summary['interval_resamples']}] over {summary['scored_tokens']} tokens of "
                      f"{summary['texts']} texts (PLL-{pll})", markup=False)
        return
    summary = evaluation_summary(run(config), config.seed)
    if not _is_main_process():
        return
    if json_out:
        print(json.dumps(summary))
    else:
        low, high = summary["perplexity_interval"]
        out.print(f"perplexity {summary['perplexity']:.4f} [{summaries.interval_label(summary)} {low:.4f}, {high:.4f} over "
                  f"{summary['interval_resamples']}] (eval loss {summary['eval_loss']:.4f} over "
                  f"{summary['masked_tokens']} masked tokens; {summary['bits_per_byte']:.4f} bits per byte)", markup=False)


def _evaluate_against(config, base: str, json_out: bool) -> None:
    from mlm_adapt.evaluation import comparison_summary, evaluate_against, evaluation_summary

    base_config = cfg.ModelConfig(base, allow_pickle=config.model.allow_pickle, trust_remote_code=config.model.trust_remote_code)
    before, after = evaluate_against(config, base_config)
    summary = {**evaluation_summary(after, config.seed), "comparison": comparison_summary(before, after, config.seed)}
    if not _is_main_process():
        return
    if json_out:
        print(json.dumps(summary))
        return
    c = summary["comparison"]
    verdict = {True: "significant", False: "not significant", None: f"no verdict: {c['interval_caveat']}"}[c["significant"]]
    label = "interval" if c["interval_caveat"] else "95% interval"
    out.print(f"perplexity {summary['perplexity']:.4f} (base {c['base_perplexity']:.4f}) on {summary['masked_tokens']} "
              f"masked tokens; ratio {c['ratio']:.4f} [{label} {c['interval'][0]:.4f}, {c['interval'][1]:.4f} over "
              f"{c['interval_resamples']}]: {verdict}", markup=False)


@app.command()
def vocab(
    model: Model = None, data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    general_data: Annotated[Optional[str], typer.Option(help="General-domain text to compare with (same forms as --data)")] = None,
    general_split: Annotated[str, typer.Option(help="Split of --general-data")] = "train",
    general_text_column: Annotated[str, typer.Option(help="Text column of --general-data")] = "text",
    general_encoding: Annotated[Optional[str], typer.Option(help="Text encoding of --general-data (default: --encoding)")] = None,
    top: Annotated[Optional[int], typer.Option(help=f"Words to list (default: {cfg.VocabConfig.top})")] = None,
    max_documents: Annotated[Optional[int], typer.Option(
        help=f"Documents read from each corpus at most (default: {cfg.VocabConfig.max_documents})")] = None,
    json_out: JsonOut = False,
) -> None:
    """How MODEL's tokenizer fragments the words of DATA, costliest first (what --add-tokens adds)."""
    from mlm_adapt.vocabulary import report

    given = {"data": data, "split": split, "text_column": text_column, "encoding": encoding}
    domain = cfg.DataConfig(**{k: v for k, v in given.items() if v is not None})
    general = cfg.DataConfig(data=general_data, split=general_split, text_column=general_text_column,
                             encoding=general_encoding or domain.encoding) if general_data else None
    sizes = {k: v for k, v in {"top": top, "max_documents": max_documents}.items() if v is not None}
    result = report(cfg.VocabConfig(cfg.ModelConfig(model or cfg.ModelConfig().model), domain, general, **sizes))
    if json_out:
        print(json.dumps(result.to_json()))
    else:
        summaries.print_vocab(result)


@app.command()
def probe(
    model: Model = None,
    compare: Annotated[Optional[str], typer.Option(help="A second model probed on the same splits (e.g. the base model)")] = None,
    data: Data = None, split: Split = None, text_column: TextColumn = None, encoding: Encoding = None,
    label_column: Annotated[Optional[str], typer.Option(help=f"Column with the labels (default: {cfg.ProbeConfig.label_column})")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Repeats of the k-fold, each shuffled anew (default: 2, 1 with --finetune)")] = None,
    folds: Annotated[Optional[int], typer.Option(help="Folds: every row is predicted by a model that did not train on it (default: 5, 3 with --finetune)")] = None,
    max_rows: Annotated[Optional[int], typer.Option(help=f"Labelled rows used at most, a seeded sample (default: {cfg.ProbeConfig.max_rows})")] = None,
    seen: Annotated[Optional[str], typer.Option(help="A corpus the models trained on (the adaptation data): labelled rows whose text it holds are left out")] = None,
    seen_text_column: Annotated[str, typer.Option(help="Text column of --seen")] = "text",
    finetune: Annotated[bool, typer.Option("--finetune", help="Fine-tune each model with a classification head instead of probing frozen embeddings")] = False,
    finetune_epochs: Annotated[Optional[int], typer.Option(help=f"Epochs of --finetune (default: {cfg.ProbeConfig.finetune_epochs})")] = None,
    finetune_lr: Annotated[Optional[float], typer.Option(help=f"Peak learning rate of --finetune (default: {cfg.ProbeConfig.finetune_lr})")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Batch size of --finetune (default: {cfg.ProbeConfig.batch_size})")] = None,
    precision: PrecisionOpt = None,
    seed: Seed = None, allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
) -> None:
    """Does MODEL (vs --compare) serve a task? A frozen-encoder probe (mean-pooled embeddings + logistic
    regression), or with --finetune a short full fine-tune, scored on out-of-fold predictions; with
    --compare, the paired difference and its 95% interval (significant only if it excludes 0)."""
    from mlm_adapt.probing import probe as run

    trust = {"allow_pickle": bool(allow_pickle), "trust_remote_code": bool(trust_remote_code)}
    models = tuple(cfg.ModelConfig(model=name, **trust) for name in [model or cfg.ModelConfig().model] + ([compare] if compare else []))
    given = {"data": data, "split": split, "text_column": text_column, "encoding": encoding}
    options = {"label_column": label_column, "seeds": seeds, "folds": folds, "max_rows": max_rows, "seed": seed,
               "finetune": finetune, "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr,
               "batch_size": batch_size, "precision": precision}
    config = cfg.ProbeConfig(models=models, data=cfg.DataConfig(**{k: v for k, v in given.items() if v is not None}),
                             **{k: v for k, v in options.items() if v is not None})
    trained_on = cfg.DataConfig(data=seen, text_column=seen_text_column, encoding=config.data.encoding) if seen else None
    report = run(config, trained_on=trained_on)
    if json_out:
        print(json.dumps(report))
    else:
        summaries.print_probe(report)


@app.command("fill-mask")
def fill_mask(
    texts: Annotated[list[str], typer.Argument(help="Texts with [MASK] or <mask>")],
    model: Model = None,
    compare: Annotated[Optional[str], typer.Option(help="A second model to show side by side (e.g. the base model)")] = None,
    top_k: Annotated[int, typer.Option(help="Predictions per mask")] = 5,
    allow_pickle: AllowPickle = None, trust_remote_code: TrustRemote = None, json_out: JsonOut = False,
) -> None:
    """Top-k completions of each mask in TEXTS, optionally next to a second model's."""
    from mlm_adapt.inference import fill_mask as run

    trust = {"allow_pickle": bool(allow_pickle), "trust_remote_code": bool(trust_remote_code)}
    names = [model or cfg.ModelConfig().model] + ([compare] if compare else [])
    results = {name: run(cfg.ModelConfig(model=name, **trust), texts, top_k) for name in names}
    if json_out:
        print(json.dumps(summaries.fill_mask_json(texts, results)))
    else:
        summaries.print_fill_mask(texts, results)


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Folder for both stages and summary.json")] = Path("mlm-adapt-demo"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse an output folder that holds files")] = False,
    minutes: Annotated[float, typer.Option(help="Time budget: the stages are sized from this machine's measured step time")] = 10,
) -> None:
    """Offline demo: adapt a real pretrained encoder from news to movie reviews, then measure what it helped and cost."""
    from mlm_adapt.demo import run_demo
    from mlm_adapt.runtime import has_accelerator_device, tune_process_for_training

    tune_process_for_training("gpu" if has_accelerator_device() else "cpu")  # before the step is timed
    summary = run_demo(output, overwrite, minutes=minutes)
    summaries.print_demo_summary(summary)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one ``error:`` line and exit status 2."""
    summaries.setup_logging()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="mlm-adapt", standalone_mode=False)
    except MlmAdaptError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        sys.exit(130)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # bad flags or values: same one-line form as our own errors
        if debug:
            raise
        if exc.format_message():  # empty when typer already printed the help (no arguments)
            print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
