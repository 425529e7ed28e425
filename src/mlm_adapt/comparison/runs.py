"""The comparison's run folders: ``DIR/<recipe>/seed-<k>``, each a plain ``train`` run folder
(a several-stage recipe's earlier stages beside it, ``seed-<k>-stage-<i>``).

Running the comparison again reuses a finished run (its ``metrics.json`` and ``config.yaml``
written, with the options planned now), resumes one with a checkpoint (``--resume``) and
restarts one killed before its first checkpoint. A folder trained elsewhere (a cluster job
running ``mlm-adapt train --config DIR/<recipe>/seed-<k>.yaml``, which ``--plan`` writes) is
collected the same way. A folder holding a run with other options is refused, never
overwritten: on another split it could not be compared row by row at all.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlm_adapt import flat_options
from mlm_adapt.config import TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.training import checkpoints

log = logging.getLogger("mlm_adapt")

# What makes two runs' held-out documents, masks and held-back rows the same.
SPLIT_OPTIONS = ("split_seed", "data", "split", "text_column", "encoding", "document_boundary", "chunk_size", "remainder",
                 "eval_size", "eval_masking", "eval_mask_prob", "task_data", "task_split", "task_text_column",
                 "task_test_share", "general_data", "general_split", "general_text_column", "general_encoding")
# Options that do not change what a finished run is (where it was written, how it was started).
_FREE = checkpoints.RESUME_FREE_OPTIONS | {"eval_batch_size", "num_workers"}
State = Literal["finished", "resume", "restart", "new"]


@dataclass(frozen=True)
class PlannedRun:
    """One recipe's run of one training seed: its stages in order (the last one's folder is the run's)."""

    recipe: str
    seed: int
    stages: tuple[TrainConfig, ...]

    @property
    def folder(self) -> Path:
        return self.stages[-1].output


def _options(config: TrainConfig) -> dict:
    options = flat_options.to_options(config)
    options["split_seed"] = config.data_seed()  # a run without --split-seed drew its split with --seed
    return options


def _written_options(folder: Path) -> dict | None:
    path = folder / "config.yaml"
    if not path.is_file():
        return None
    written = flat_options.read_yaml_options(path)
    try:
        return _options(flat_options.from_options(TrainConfig, written))
    except MlmAdaptError as exc:
        raise MlmAdaptError(f"{path}: not a run this version can read ({exc})") from None


def check_same_run(folder: Path, planned: TrainConfig, written: dict) -> None:
    """Refuse a finished run whose options differ from the plan's: first what moves the split,
    then anything else that changes the result."""
    wanted = _options(planned)
    split = [k for k in SPLIT_OPTIONS if _same_path(written.get(k)) != _same_path(wanted.get(k))]
    if split:
        details = ", ".join(f"{k}: {written.get(k)!r}, here {wanted.get(k)!r}" for k in split)
        raise MlmAdaptError(f"{folder} was trained on another split ({details}): its held-out documents and task rows are "
                            "not this comparison's. Move it away, or compare with its options")
    other = sorted(k for k in set(wanted) | set(written)
                   if k not in _FREE and _same_path(written.get(k)) != _same_path(wanted.get(k)))
    if other:
        details = ", ".join(f"{k}: {written.get(k)!r}, here {wanted.get(k)!r}" for k in other)
        raise MlmAdaptError(f"{folder} holds a run with other options ({details}); move it away or use another --output")


def _same_path(value):
    """Paths compared resolved (a run written with a relative path, collected from elsewhere)."""
    if isinstance(value, str) and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return value


def state(config: TrainConfig) -> State:
    """What to do with a stage's folder: nothing (finished), resume, restart, or a new run."""
    folder = config.output
    written = _written_options(folder)
    if (folder / "metrics.json").is_file() and written is not None:
        check_same_run(folder, config, written)
        return "finished"
    if checkpoints.complete_checkpoints(folder):
        return "resume"
    return "restart" if folder.is_dir() and any(folder.iterdir()) else "new"


def check_folders(runs: list[PlannedRun]) -> dict[Path, State]:
    """Every stage's state, read before anything trains: a folder on another split is refused
    before any work is done."""
    return {stage.output: state(stage) for run in runs for stage in run.stages}


def train_stage(config: TrainConfig, how: State) -> None:
    """Run one stage as ``train`` would: resumed from its checkpoint, or afresh; then drop
    its checkpoints."""
    from mlm_adapt.training.loop import train

    if how == "finished":
        return
    log.info("training %s (%s)", config.output, {"resume": "resuming", "restart": "restarting", "new": "new"}[how])
    train(dataclasses.replace(config, resume=how == "resume", overwrite=how == "restart"))
    # A finished run is never resumed: its checkpoints (weights and AdamW state, ~3x the
    # model) would only fill the disk, 16 of them for 5 recipes x 3 seeds.
    checkpoints.clear(config.output)


def write_plan(runs: list[PlannedRun], folder: Path) -> list[str]:
    """Each stage's options as ``DIR/<recipe>/seed-<k>[-stage-<i>].yaml`` and one shell
    command per run (its stages joined by ``&&``): a scheduler's array of jobs, one per line."""
    commands = []
    for run in runs:
        steps = []
        for stage in run.stages:
            path = stage.output.with_name(stage.output.name + ".yaml")
            path.parent.mkdir(parents=True, exist_ok=True)
            flat_options.write_yaml(stage, path)
            steps.append(f"mlm-adapt train --config {shlex.quote(str(path))}")
        commands.append(" && ".join(steps))
    (folder / "plan.txt").write_text("\n".join(commands) + "\n", encoding="utf-8")
    return commands
