"""Publishing a finished run to the Hugging Face Hub with the user's saved login.

The token is whatever ``hf auth login`` stored (or ``HF_TOKEN``); mlm-adapt never
reads it into a message, a log or a file.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.system.disclosure import redact

# What stays local: checkpoints (optimizer state, large) and mlm-adapt's bookkeeping.
IGNORE = ["checkpoints/*", ".mlm-adapt-manifest.json", ".staging-*", "logs/*"]
# Files whose text may name local paths (config.yaml, metrics.json, README.md, report.html, ...).
TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".html", ".txt"}


def offline_mode(*library_variables: str) -> bool:
    """Whether offline mode is on, read as huggingface_hub reads it (``1``, ``true``, ``yes``,
    ``on``, any case) from ``HF_HUB_OFFLINE`` and the calling library's own variables
    (``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``). Read now, not at import: the
    libraries freeze theirs when first imported, which is when this process started."""
    from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

    names = ("HF_HUB_OFFLINE", *library_variables)
    return any((os.environ.get(name) or "").upper() in ENV_VARS_TRUE_VALUES for name in names)


def check_access(repo_id: str) -> str:
    """Fail before training, not after: offline, not logged in, the Hub out of reach, or a
    login that cannot write to ``repo_id``'s namespace. Returns the user name."""
    if "/" in repo_id.strip("/") and len(repo_id.split("/")) != 2:
        raise MlmAdaptError(f"--push-to-hub {repo_id!r} is not a repo id like 'user/name'")
    if offline_mode():
        raise MlmAdaptError(f"--push-to-hub needs the Hub, but offline mode is on (HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']})")
    from huggingface_hub import HfApi

    try:
        info = HfApi().whoami()
    except Exception as exc:  # the client raises many unrelated types
        raise _login_error(exc) from None
    namespace = repo_id.split("/")[0] if "/" in repo_id else info["name"]
    _check_write_access(info, namespace)
    return info["name"]


def _login_error(exc: Exception) -> MlmAdaptError:
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    if isinstance(exc, LocalTokenNotFoundError):
        return MlmAdaptError("--push-to-hub: not logged in to the Hub; run 'hf auth login' (or set HF_TOKEN)")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return MlmAdaptError("--push-to-hub: the Hub rejected the saved token (expired or revoked); "
                             "run 'hf auth login' again (or set HF_TOKEN)")
    # The HTTP client's transport errors (no route, refused, timed out) share no base
    # class with requests' or the standard library's, so they are told apart by name.
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"TransportError", "NetworkError", "TimeoutException", "ConnectionError", "Timeout"}:
        return MlmAdaptError(f"--push-to-hub: cannot reach the Hub ({type(exc).__name__}); check the network "
                             "or HF_ENDPOINT, or train without --push-to-hub and upload later")
    return MlmAdaptError(f"--push-to-hub: the Hub refused the login check ({type(exc).__name__}); "
                         "run 'hf auth login' (or set HF_TOKEN)")


def _check_write_access(info: dict, namespace: str) -> None:
    """The saved token must be allowed to create and write ``namespace/...`` repos."""
    owners = {info.get("name")} | {org.get("name") for org in info.get("orgs") or []}
    if namespace not in owners:
        raise MlmAdaptError(f"--push-to-hub: logged in as {info.get('name')!r}, who has no write access to the "
                            f"namespace {namespace!r} (not the user nor one of its organisations)")
    token = (info.get("auth") or {}).get("accessToken") or {}
    role = token.get("role")
    if role == "read":
        raise MlmAdaptError("--push-to-hub: the saved token is read-only; create a token with write access "
                            "and run 'hf auth login' with it")
    if role == "fineGrained":
        scoped = (token.get("fineGrained") or {}).get("scoped") or []
        if not any((s.get("entity") or {}).get("name") == namespace and "repo.write" in (s.get("permissions") or [])
                   for s in scoped):
            raise MlmAdaptError(f"--push-to-hub: the saved fine-grained token has no 'repo.write' permission "
                                f"on {namespace!r}; add it in the token's settings")


def push_folder(output: Path, repo_id: str, private: bool, local_paths: tuple[str, ...] = ()) -> str:
    """Create (or reuse) ``repo_id`` and upload the model folder; returns the commit URL.

    What is uploaded is a copy in which every one of ``local_paths`` (``disclosure.local_paths``
    of the run's options and output folder) is written as its name alone: config.yaml and
    metrics.json name them in full for local use, and a Hub repo must not publish
    ``/home/USER/...``."""
    from huggingface_hub import HfApi

    api = HfApi()
    with tempfile.TemporaryDirectory(prefix=".push-", dir=Path(output).parent) as staging:
        _stage_public_copy(Path(output), Path(staging), local_paths)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(folder_path=staging, repo_id=repo_id, ignore_patterns=IGNORE,
                                     commit_message="Upload model adapted with mlm-adapt")
        except Exception as exc:
            raise MlmAdaptError(f"--push-to-hub {repo_id}: upload failed ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return str(getattr(info, "commit_url", info))


def _stage_public_copy(output: Path, staging: Path, local_paths: tuple[str, ...]) -> None:
    """The files ``IGNORE`` does not name: text copied with paths redacted, the rest
    hard-linked (or copied). Checkpoints are not staged only to be skipped by the upload."""
    for source in output.rglob("*"):
        relative = source.relative_to(output)
        if not source.is_file() or any(fnmatch.fnmatch(relative.as_posix(), pattern) for pattern in IGNORE):
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix in TEXT_SUFFIXES:
            target.write_text(redact(source.read_text(encoding="utf-8"), local_paths), encoding="utf-8")
        else:
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
