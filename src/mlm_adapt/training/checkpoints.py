"""Checkpoints that appear only when complete, and exact resume from them.

A checkpoint is ``OUTPUT/checkpoints/step-N/``: accelerate's ``save_state``
(model, optimizer, scheduler and the torch/NumPy/Python RNG states) plus
``trainer_state.json`` (position in the data, history, the run's options). It is
written under a temporary name and renamed when complete, so a crash mid-write
leaves a ``.tmp-`` folder that resume ignores. Masks need no saved state: they
are drawn from generators seeded by (seed, epoch, step), so a resumed run
redraws exactly the masks it would have drawn, without replaying batches.
:class:`StopFlag` turns SIGINT/SIGTERM into "checkpoint at the next step boundary".
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.outputs.artifacts import out_of_space, space_error, write_json

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# Options that may change between an interrupted run and its resumption without
# changing the result.
RESUME_FREE_OPTIONS = frozenset({"overwrite", "resume", "save_steps", "keep_checkpoints", "logging_steps", "output"})


def checkpoint_root(output: Path) -> Path:
    return Path(output) / "checkpoints"


def complete_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written ``.tmp-`` folders are not listed)."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


class _TiedWeightsNotice(logging.Filter):
    """Drops accelerate's "Removed shared tensor {...decoder.weight...} while saving" notice: an
    MLM head's decoder is tied to the input embeddings, safetensors stores shared storage once,
    and loading ties them again (resume is exact: tests/test_checkpoints.py). Printed in the
    middle of the progress bar at every checkpoint, it read like lost weights."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()  # accelerate prefixes "[RANK 0] "


_ACCELERATE_SAVING = logging.getLogger("accelerate.utils.other")  # where accelerate's save() logs it


def save_checkpoint(accelerator, output: Path, state: dict[str, Any], keep: int | None) -> Path:
    """Write ``step-N`` atomically (all processes call this; the main one renames and prunes)."""
    root = checkpoint_root(output)
    final = root / f"step-{state['step']}"
    tmp = root / f".tmp-step-{state['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    notice = _TiedWeightsNotice()
    _ACCELERATE_SAVING.addFilter(notice)
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every process's random states are in before the rename
        if accelerator.is_main_process:
            write_json(tmp / STATE_FILE, state)  # last: marks the folder complete
    except (OSError, RuntimeError) as exc:
        full = out_of_space(exc, root)
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        raise space_error(f"checkpoint {final.name}", root, resume_hint(output)) from None
    finally:
        _ACCELERATE_SAVING.removeFilter(notice)
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep is not None:
            _prune(output, keep, final)
    accelerator.wait_for_everyone()
    return final


def _prune(output: Path, keep: int, newest: Path) -> None:
    """Delete the oldest complete checkpoints beyond ``keep``; ``newest``, the one just
    written, stays whatever step numbers the others have."""
    others = [p for p in complete_checkpoints(output) if p != newest]
    for old in others[: max(0, len(others) + 1 - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def resume_hint(output: Path) -> str:
    """What to do after a save ran out of space: resume from the last complete checkpoint."""
    kept = complete_checkpoints(output)
    if not kept:
        return "Free some space and run again."
    return (f"Earlier checkpoints are intact: free some space, then run the same command with --resume to "
            f"continue from {kept[-1].name}.")


def clear(output: Path) -> None:
    """Remove every checkpoint of an earlier run in ``output`` (``--overwrite``), complete or
    half-written, so that nothing of it can be resumed or outrank the new run's."""
    shutil.rmtree(checkpoint_root(output), ignore_errors=True)


SELECTED = "selected"  # OUTPUT/checkpoints/selected/: the weights --select chose so far


def keep_selected(accelerator, objective, output: Path, step: int) -> None:
    """Keep the weights of the evaluation just selected (``training.selection``), written
    atomically beside the checkpoints: every process takes part (a sharded model is gathered)."""
    weights = {k.removeprefix("model."): v.detach().to("cpu", copy=True).contiguous()
               for k, v in accelerator.get_state_dict(objective).items()}  # copies: tied weights share memory
    if not accelerator.is_main_process:
        return
    from safetensors.torch import save_file

    root = checkpoint_root(output)
    tmp, final = root / f".tmp-{SELECTED}", root / SELECTED
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(weights, tmp / "model.safetensors", metadata={"step": str(step)})
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if out_of_space(exc, root):
            raise space_error(f"the selected model of step {step}", final, resume_hint(output)) from None
        raise


def load_selected(output: Path, step: int) -> dict[str, Any]:
    """The weights :func:`keep_selected` kept for ``step``; an error if another step's are there."""
    from safetensors import safe_open

    path = checkpoint_root(output) / SELECTED / "model.safetensors"
    if not path.is_file():
        raise MlmAdaptError(f"the selected model of step {step} is missing from {path.parent}")
    with safe_open(path, framework="pt") as file:
        kept = int((file.metadata() or {}).get("step", -1))
        if kept != step:
            raise MlmAdaptError(f"{path.parent} holds step {kept}'s weights, not the selected step {step}'s")
        return {key: file.get_tensor(key) for key in file.keys()}


def load_checkpoint(accelerator, path: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; return the saved trainer state."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))


def check_resumable(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a resume whose options would change the result, naming them."""
    changed = sorted(
        key for key in set(saved) | set(current)
        if key not in RESUME_FREE_OPTIONS and saved.get(key) != current.get(key)
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise MlmAdaptError(
            f"cannot resume: options changed since the checkpoint ({details}); "
            "resume with the original options, or start afresh with --overwrite"
        )


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
