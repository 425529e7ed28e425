"""Publishing a finished run to the Hugging Face Hub with the user's saved login.

The token is whatever ``hf auth login`` stored (or ``HF_TOKEN``); mlm-adapt never
reads it into a message, a log or a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlm_adapt.errors import MlmAdaptError

# What stays local: checkpoints (optimizer state, large) and mlm-adapt's bookkeeping.
IGNORE = ["checkpoints/*", ".mlm-adapt-manifest.json", ".staging-*", "logs/*"]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def check_access(repo_id: str) -> str:
    """Fail before training, not after: offline, or no saved login. Returns the user name."""
    if "/" in repo_id.strip("/") and len(repo_id.split("/")) != 2:
        raise MlmAdaptError(f"--push-to-hub {repo_id!r} is not a repo id like 'user/name'")
    if _offline():
        raise MlmAdaptError("--push-to-hub needs the Hub, but offline mode is on (HF_HUB_OFFLINE=1)")
    from huggingface_hub import HfApi

    try:
        return HfApi().whoami()["name"]
    except Exception as exc:  # no token, a bad one, or no network
        kind = type(exc).__name__
        raise MlmAdaptError(
            f"--push-to-hub: cannot reach the Hub as a logged-in user ({kind}); run 'hf auth login' "
            "(or set HF_TOKEN) and check the network"
        ) from None


def push_folder(output: Path, repo_id: str, private: bool) -> str:
    """Create (or reuse) ``repo_id`` and upload the model folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(output), repo_id=repo_id, ignore_patterns=IGNORE,
                                 commit_message="Upload model adapted with mlm-adapt")
    except Exception as exc:
        raise MlmAdaptError(f"--push-to-hub {repo_id}: upload failed ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return str(getattr(info, "commit_url", info))
