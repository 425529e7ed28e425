"""The domain-adaptation run: one training loop, readable top to bottom.

The training source (``data``) hands this process its masked micro-batches; the
optimizer step (``optimizer_step.train_step``, torchtune-style) makes the gradient that
of the mean loss per masked token over the whole step; this module runs the loop:
evaluations, checkpoints, signals, metrics and the saved outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import closing
from typing import Any

from tqdm.auto import tqdm

from mlm_adapt import flat_options
from mlm_adapt.config import TrainConfig
from mlm_adapt.data import task_adaptive
from mlm_adapt.errors import MlmAdaptError, TrainingInterrupted
from mlm_adapt.evaluation import probing, provenance, vocabulary, word_ledger
from mlm_adapt.evaluation.perplexity import EvalResult, before_after, evaluate_sets, evaluation_record
from mlm_adapt.modeling import adapters
from mlm_adapt.modeling.loading import fresh_weights
from mlm_adapt.modeling.objective import supports_sparse_prediction, trims_last_layer
from mlm_adapt.modeling.preparation import Prepared, prepare
from mlm_adapt.outputs import artifacts, reporting
from mlm_adapt.system import disclosure, hub
from mlm_adapt.system.runtime import WHOLE_MODEL_LAUNCHES, check_launch, make_accelerator
from mlm_adapt.training import checkpoints, selection
from mlm_adapt.training.optimizer_step import WARMUP_STEPS_NOT_TIMED, StepOutcome, optimisation, train_step
from mlm_adapt.training.state import RunState, Timer, log_to_trackers, read_steps, record_evaluation, tracker_config

log = logging.getLogger("mlm_adapt")

def _prepare_output(config: TrainConfig):
    if config.resume:
        if not checkpoints.complete_checkpoints(config.output):
            raise MlmAdaptError(f"--resume: no complete checkpoint in {checkpoints.checkpoint_root(config.output)}")
        return config.output
    output = artifacts.prepare_output(config.output, config.overwrite)
    if config.overwrite:
        checkpoints.clear(output)
    return output


def _start_or_resume(config, accelerator, objective, prepared: Prepared, timer: Timer, scored: dict) -> RunState:
    options = flat_options.to_options(config)
    if config.resume:
        path = checkpoints.complete_checkpoints(config.output)[-1]
        saved = checkpoints.load_checkpoint(accelerator, path)
        checkpoints.check_resumable(saved["options"], options)
        log.info("resuming from %s (step %d)", path, saved["step"])
        return RunState(**{**saved, "options": options})
    with timer.spend("evaluation"):
        results = evaluate_sets(objective, prepared, config.evaluation_batch_size(), accelerator)
    before = results["eval"]
    scored[0] = before
    log.info("perplexity before training: %.3f on %d masked tokens", before.perplexity, before.masked_tokens)
    if "general" in results:
        log.info("general-text perplexity before training: %.3f", results["general"].perplexity)
    # Its NLL per piece of chunk stays in the checkpoint: the end's before/after interval resamples them (by document).
    return RunState(options=options, before=evaluation_record(results, config.data_seed()))


def train(config: TrainConfig) -> dict[str, Any]:
    """Adapt ``config.model`` to ``config.data``; save the model and return its metrics."""
    started = time.perf_counter()
    if config.push_to_hub:
        hub.check_access(config.push_to_hub)
    accelerator, precision = make_accelerator(config.precision, config.report_to, config.output / "logs")
    check_launch(accelerator.distributed_type, config.grad_accum)
    with accelerator.main_process_first():  # the others find the folder the main process made, still empty
        output = _prepare_output(config)
    task = task_adaptive.for_run(config)
    # --lora-rank: adapters injected into the model in place, everything else frozen, before
    # the optimizer sees which parameters train (seeded: a resumed run draws the same A).
    prepared = prepare(config, accelerator, extend=_vocabulary_extension(config), general=config.general_data_config(),
                       replay_ratio=config.replay_ratio, task=task, lora=config.lora_settings())
    adapter = prepared.adapter
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)  # one process reports progress
    source = prepared.data.train
    steps_per_epoch = source.steps_per_epoch(config, accelerator.num_processes)
    total_steps = config.total_steps(steps_per_epoch)
    objective, optimizer, scheduler = optimisation(config, prepared.model, accelerator, total_steps, prepared.separator)
    timer = Timer(started=started)
    # Each evaluation's held-out scores by step (0: the model the run started from), kept in
    # memory for the word ledger, which then need not score the two models again.
    scored: dict[int, EvalResult] = {}
    state = _start_or_resume(config, accelerator, objective, prepared, timer, scored)
    rule = config.selection_rule()
    objective.train()  # from_pretrained returns models in eval mode: dropout must be on
    accelerator.init_trackers("mlm-adapt", config=tracker_config(state.options))

    unread: list[tuple[int, float, StepOutcome]] = []  # steps whose results are not read yet
    stopping = False  # a stop request read from a step's outcome: the same on every process
    batches = source.batches(config, prepared.vocab, accelerator, state.step)
    with closing(batches), checkpoints.StopFlag() as stop, tqdm(total=total_steps, initial=state.step, desc="training", unit="step",
                                   disable=not accelerator.is_main_process) as bar:
        while state.step < total_steps:
            if timer.mark is None:
                timer.mark = time.perf_counter()
            unread.append((state.step + 1, scheduler.get_last_lr()[0],
                           train_step(objective, optimizer, scheduler, accelerator, next(batches), stop.signal is not None)))
            state.advance()
            bar.update(1)
            # Evaluate at each epoch's end, every --eval-steps and at the last step. Checkpoint at
            # each epoch's end, every --save-steps and on SIGINT/SIGTERM, but not at the last step:
            # the final model is saved instead (a signal then just lets the run finish).
            epoch_done, last = state.step_in_epoch == steps_per_epoch, state.step == total_steps
            evaluate = epoch_done or last or _every(config.eval_steps, state.step)
            scheduled_save = not last and (epoch_done or _every(config.save_steps, state.step))
            # A step's loss is read once the next step is queued, so a GPU never idles while the
            # host reads and logs it; everything is read before evaluating or saving, and in the
            # untimed first steps (so that the timer's first timed step starts when they end).
            keep = 0 if evaluate or scheduled_save or timer.steps < WARMUP_STEPS_NOT_TIMED else 1
            seen = (len(state.log_history), len(state.history))
            stopping |= read_steps(state, config, unread[: len(unread) - keep], timer, bar)
            del unread[: len(unread) - keep]
            # One process stops on its own signal; several on a request read from a step's outcome,
            # which every process reads at the same step: signals reach them at different moments.
            interrupted = not last and (stopping if accelerator.num_processes > 1 else stop.signal is not None)
            if interrupted and unread:
                read_steps(state, config, unread, timer, bar)
                unread.clear()
            save = scheduled_save or interrupted
            stop_early = False
            if evaluate:
                with timer.spend("evaluation"):
                    results = evaluate_sets(objective, prepared, config.evaluation_batch_size(), accelerator)
                scored[state.step] = results["eval"]
                record_evaluation(state, evaluation_record(results, config.data_seed(), state.before),
                                  epoch_done, steps_per_epoch)
                # --select best / --max-forgetting: keep this evaluation's weights if it is now the
                # selected one; --early-stop: N evaluations without a better one end the run.
                if rule.chooses and selection.selected_index(state.history, state.before, rule)[0] == len(state.history) - 1:
                    checkpoints.keep_selected(accelerator, objective, config.output, state.step)
                stop_early = config.early_stop is not None and not last and \
                    selection.evaluations_without_improvement(state.history, state.before, rule) >= config.early_stop
            if epoch_done:
                state.next_epoch()
            if save:
                checkpoints.save_checkpoint(accelerator, config.output, dataclasses.asdict(state), config.keep_checkpoints)
            if evaluate or save:
                timer.mark = None  # their time is not the steps'
            log_to_trackers(accelerator, state, seen)
            if interrupted:
                raise TrainingInterrupted(
                    f"interrupted at step {state.step}; checkpoint saved in {checkpoints.checkpoint_root(config.output)}. "
                    "Resume with the same command plus --resume"
                )
            if stop_early:
                log.info("stopping early at step %d: %d evaluations without a lower held-out perplexity",
                         state.step, config.early_stop)
                break
    metrics = _metrics(config, prepared, state, precision, timer, accelerator.num_processes)
    metrics["lora"] = adapter.record if adapter is not None else None
    _finish(config, accelerator, objective, prepared, output, metrics, timer, scored, adapter)
    return metrics


def _vocabulary_extension(config: TrainConfig):
    """With --add-tokens / --add-tokens-file: what adds the words to model and tokenizer.
    The words are chosen again on --resume, from the same data: the same words."""
    if not config.extends_vocabulary():
        return None

    def extend(model, tokenizer):
        model, tokenizer, added = vocabulary.extend_vocabulary(model, tokenizer, vocabulary.words_to_add(config, tokenizer))
        log.info("added %d words to the vocabulary: %s", len(added), ", ".join(a.token for a in added[:10])
                 + (", ..." if len(added) > 10 else ""))
        return model, tokenizer, added

    return extend


def _every(interval: int | None, step: int) -> bool:
    return interval is not None and step % interval == 0


def _finish(config: TrainConfig, accelerator, objective, prepared: Prepared, output, metrics: dict[str, Any], timer: Timer,
            scored: dict[int, EvalResult], adapter: adapters.Adapter | None) -> None:
    """Log the final numbers, save the model and its reports (and push them), end the run."""
    accelerator.log({"perplexity_before": metrics["perplexity_before"], "perplexity_after": metrics["perplexity_after"]},
                    step=metrics["steps"])
    # Every process takes part: a sharded model (FSDP, DeepSpeed ZeRO-3) is gathered here.
    weights = {k.removeprefix("model."): v for k, v in accelerator.get_state_dict(objective).items()}
    model = accelerator.unwrap_model(objective).model
    # Under data parallelism every process holds the whole model, so each scores its share
    # of the word ledger's tokens, as in evaluation; a sharded one only saves.
    whole = accelerator.distributed_type in WHOLE_MODEL_LAUNCHES
    if metrics["selected_step"] != metrics["steps"]:  # an earlier evaluation was selected: save its weights
        accelerator.wait_for_everyone()  # the main process has written them (checkpoints.keep_selected)
        if accelerator.is_main_process or whole:  # explicit, not left to DDP's broadcast when the ledger wraps it
            weights = checkpoints.load_selected(config.output, metrics["selected_step"])
            model.load_state_dict(weights)  # the reports' fill-mask table and word ledger show the saved model
    if adapter is not None:  # the saved adapter, then the plain model it folds into (what is saved and probed)
        model = adapter.merge()
        weights = model.state_dict()
    # What changed, word by word (report.html): needs a vocabulary the base can score, and a
    # base that is a language model (not an encoder whose MLM head was drawn at random).
    if whole and not config.extends_vocabulary() and not fresh_weights(prepared.model):
        with timer.spend("evaluation"):
            known = tuple(getattr(scored.get(step), "token_nll", None) for step in (0, metrics["selected_step"]))
            metrics["words"] = word_ledger.against_base(model, config.model, prepared, config.evaluation_batch_size(),
                                                        accelerator, scored=known)
    if accelerator.is_main_process:
        _save_outputs(config, output, model, weights, prepared, metrics, timer, adapter)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it also ends the process group


def _save_outputs(config: TrainConfig, output, model, weights: dict, prepared: Prepared, metrics: dict[str, Any],
                  timer: Timer, adapter: adapters.Adapter | None) -> None:
    """Save the model first, then run the extras (task probe, push): a failing extra never
    loses the training. The probe's scores and where the time went then join metrics.json,
    the report and the card."""
    def extras(folder) -> None:
        flat_options.write_yaml(config, folder / "config.yaml")
        provenance.write(folder, config.model.model, provenance.run_corpora(config, prepared))
        reporting.write_run_report(folder, config, metrics, model, prepared.tokenizer, prepared.data.eval)
        if adapter is not None:
            adapter.write(folder / adapters.ADAPTER_FOLDER)

    artifacts.save_final(output, model, prepared.tokenizer, metrics, write_extra=extras, weights=weights,
                         resume_hint=checkpoints.resume_hint(config.output))
    task = config.task_probe_config() if config.task_probe else None
    if task is not None:
        log.info("probing the task in %s: base model vs adapted model, %d folds x %d repeats ...", task.data.data,
                 task.fold_count(), task.repeats())
        # The texts this run and its base trained on (their folders' trained_on.json) are never tested.
        with timer.spend("task_probe"):
            try:
                metrics["task_probe"] = {"data": task.data.data,
                                         **probing.probe(task, loaded={str(config.output): (model, prepared.tokenizer)})}
            except MlmAdaptError as exc:  # the model is saved: say why there is no probe, and finish
                log.warning("no task probe: %s", exc)
                metrics["task_probe_error"] = str(exc)
    metrics["seconds"] = timer.breakdown()
    artifacts.save_reports(output, metrics, write_extra=extras)
    if config.push_to_hub:
        local = tuple(disclosure.local_paths(flat_options.to_options(config), str(output)))
        log.info("pushed to the Hub: %s", hub.push_folder(output, config.push_to_hub, config.hub_private, local))


def _metrics(config, prepared: Prepared, state: RunState, precision: str, timer: Timer, world: int) -> dict[str, Any]:
    """metrics.json: "after" is the saved model, the evaluation the selection rule chose."""
    chosen = selection.selection_record(state.history, state.before, config.selection_rule())
    saved = next(entry for entry in state.history if entry["step"] == chosen["selected_step"])
    return {
        "model": config.model.model,
        "data": config.data.data,
        "general_data": config.general_data,
        **before_after(state.before, saved, prepared.eval_set.masked_bytes),
        **chosen,
        "added_tokens": [{"token": a.token, "id": a.id, "pieces": list(a.pieces)} for a in prepared.added],
        "train_chunks": prepared.data.train.train_chunks(state.chunks_trained),
        "replay_chunks": prepared.data.replay_chunks,  # of train_chunks, from --general-data
        "chunks_trained": state.chunks_trained,
        "eval_chunks": len(prepared.data.eval),
        "eval_documents": prepared.data.eval_documents,
        "documents": prepared.data.train.documents,
        "steps": state.step,
        "steps_run": timer.steps,  # by this invocation: fewer than "steps" after --resume
        "train_samples_per_second": timer.samples_per_second(),
        "train_runtime_seconds": time.perf_counter() - timer.started,
        "precision": precision,
        "processes": world,
        **adapters.parameter_counts(prepared.model),
        "sparse_prediction": supports_sparse_prediction(prepared.model),
        "last_layer_on_masked_rows": trims_last_layer(prepared.model),
        "history": state.history,
        "log_history": state.log_history,
    }
