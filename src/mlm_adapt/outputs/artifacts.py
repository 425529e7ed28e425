"""What a run leaves in its output folder, and how it gets there safely.

The final model, tokenizer, ``metrics.json`` and ``config.yaml`` are first written
to a staging folder inside the output, then each file is moved into place with an
atomic rename, ``metrics.json`` last: a run that dies while saving leaves the
files it had, never a truncated one. A manifest lists what the tool wrote, so
``--overwrite`` replaces and removes only those files and leaves anything else
the user keeps there.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.modeling.loading import quiet_transformers

MANIFEST = ".mlm-adapt-manifest.json"
METRICS = "metrics.json"


def prepare_output(output: Path, overwrite: bool) -> Path:
    """Refuse a non-empty output folder unless ``overwrite``; create it otherwise."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise MlmAdaptError(f"--output {output} is a file, not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise MlmAdaptError(f"--output {output} already holds files; pass --overwrite or pick another folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlmAdaptError(f"--output {output}: cannot create the folder ({exc.strerror})") from None
    if not os.access(output, os.W_OK):
        raise MlmAdaptError(f"--output {output}: the folder is not writable")
    return output


# Free bytes below which a failed write is taken for a full disk: torch's zip writer reports
# a short write as "[enforce fail at inline_container.cc] unexpected pos", with no errno.
LOW_SPACE_BYTES = 16 << 20


def out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, means the disk (or quota) is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left" in str(exc) or "StorageFull" in str(exc):  # safetensors' Rust error text
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def space_error(what: str, folder: Path, after: str) -> MlmAdaptError:
    """The one message for a save that ran out of space: what, where, and what to do."""
    return MlmAdaptError(f"no space left on device while saving {what} in {folder}; the partial files were removed. "
                         f"{after}")


def _json_ready(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings a reader can still parse with float()."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(_json_ready(data), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def read_manifest(output: Path) -> list[str]:
    try:
        return list(json.loads((Path(output) / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError):
        return []


def save_final(output: Path, model, tokenizer, metrics: dict[str, Any], write_extra=None, weights=None,
               resume_hint: str | None = None) -> list[str]:
    """Save model (safetensors), tokenizer, ``metrics.json`` (+ files from ``write_extra(folder)``).

    ``weights`` replaces the model's own state dict (one gathered from a sharded model). A
    full disk is a user error (``resume_hint`` says what to do), its staging folder removed."""
    def write(staging: Path) -> None:
        with quiet_transformers():
            model.save_pretrained(staging, state_dict=weights)  # safetensors is the only format transformers 5 writes
            tokenizer.save_pretrained(staging)

    return _publish(output, metrics, write, write_extra, replace_all=True,
                    what="the final model and its reports", after=resume_hint or "Free some space and run again.")


def save_reports(output: Path, metrics: dict[str, Any], write_extra=None) -> list[str]:
    """Rewrite ``metrics.json`` and the files of ``write_extra(folder)`` next to a saved model,
    the same way (staged, renamed, metrics.json last), keeping the model's files."""
    return _publish(output, metrics, lambda staging: None, write_extra, replace_all=False,
                    what="the reports", after="The model is saved; free some space and run again for the reports.")


def _publish(output: Path, metrics: dict[str, Any], write, write_extra, *, replace_all: bool, what: str,
             after: str) -> list[str]:
    """Write into a staging folder, then move each file into place (``metrics.json`` last). With
    ``replace_all``, files of the manifest that were not written again are removed."""
    output = Path(output)
    staging = Path(tempfile.mkdtemp(dir=output, prefix=".staging-"))
    try:
        write(staging)
        if write_extra is not None:
            write_extra(staging)
        write_json(staging / METRICS, metrics)
        written = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        previous = set(read_manifest(output))
        if replace_all:
            for stale in previous - set(written):
                (output / stale).unlink(missing_ok=True)
        for name in sorted(written, key=lambda n: n == METRICS):  # metrics.json last: it marks completion
            target = output / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
        listed = sorted(set(written) if replace_all else previous | set(written))
        write_json(output / MANIFEST, {"files": listed})
        return written
    except (OSError, RuntimeError) as exc:
        if not out_of_space(exc, output):
            raise
        raise space_error(what, output, after) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
