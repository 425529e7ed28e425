"""Publishing to the Hub: each way the login check can fail, and train -> push end to end
against a fake API (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import train_config
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.system import hub
from mlm_adapt.training.loop import train

USER = {"name": "me", "orgs": [{"name": "lab"}], "auth": {"accessToken": {"role": "write"}}}


class FakeApi:
    """Stands in for huggingface_hub.HfApi; records what would be sent."""

    whoami_result: dict | Exception = USER
    uploaded: dict[str, bytes] = {}
    calls: dict = {}

    def __init__(self, *args, **kwargs):
        pass

    def whoami(self, *args, **kwargs):
        if isinstance(self.whoami_result, Exception):
            raise self.whoami_result
        return self.whoami_result

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls["create"] = (repo_id, kwargs)

    def upload_folder(self, folder_path, **kwargs):
        # Read now: the folder is a staging copy that is gone after the call.
        FakeApi.uploaded = {str(p.relative_to(folder_path)): p.read_bytes()
                            for p in Path(folder_path).rglob("*") if p.is_file()}
        FakeApi.calls["upload"] = kwargs
        return type("Info", (), {"commit_url": "https://hub/commit/1"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "whoami_result", USER)
    FakeApi.uploaded, FakeApi.calls = {}, {}
    return FakeApi


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on"])
def test_offline_mode_is_named(monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with pytest.raises(MlmAdaptError, match="offline mode is on"):
        hub.check_access("me/adapted")


@pytest.mark.parametrize("value", ["true", "yes", "ON"])
def test_offline_mode_is_named_when_a_model_or_dataset_cannot_be_loaded(monkeypatch, value):
    from mlm_adapt.config import DataConfig, ModelConfig
    from mlm_adapt.data.corpus import load_corpus
    from mlm_adapt.modeling.loading import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with pytest.raises(MlmAdaptError, match="offline mode is on"):
        load_tokenizer(ModelConfig("no-such-user/no-such-model"))
    with pytest.raises(MlmAdaptError, match="offline mode is on"):
        load_corpus(DataConfig(data="no-such-user/no-such-dataset"))


def _check_access_in_a_fresh_process(tmp_path, **env: str) -> str:
    """``hub.check_access`` where huggingface_hub reads ``env`` at import, as a user's
    process does (it freezes HF_HUB_OFFLINE then: setting it in this process changes nothing)."""
    import os
    import subprocess
    import sys

    code = ("from mlm_adapt.system import hub\n"
            "try:\n    hub.check_access('me/adapted')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)")
    environ = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9", **env}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environ)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_not_logged_in_says_how_to_log_in(tmp_path):
    out = _check_access_in_a_fresh_process(tmp_path, HF_TOKEN="")  # no saved token in HF_HOME
    assert out.startswith("MlmAdaptError") and "not logged in" in out and "hf auth login" in out, out


def test_unreachable_hub_is_a_network_error_not_a_login_error(tmp_path):
    # Offline mode off in the process itself, so the client really connects to a dead port.
    secret = "hf_NotARealTokenButSecret123"
    out = _check_access_in_a_fresh_process(tmp_path, HF_TOKEN=secret)
    assert out.startswith("MlmAdaptError") and "cannot reach the Hub" in out and "network" in out, out
    assert "OfflineModeIsEnabled" not in out and "offline" not in out  # the real connection error, named
    assert secret not in out and "not logged in" not in out


def test_rejected_token(fake_hub, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    response = type("Response", (), {"status_code": 401, "headers": {}, "request": None})()
    error = HfHubHTTPError("401 Unauthorized", response=response)
    monkeypatch.setattr(fake_hub, "whoami_result", error)
    with pytest.raises(MlmAdaptError, match="rejected the saved token"):
        hub.check_access("me/adapted")


@pytest.mark.parametrize("who, repo, match", [
    ({**USER, "auth": {"accessToken": {"role": "read"}}}, "me/adapted", "read-only"),
    (USER, "someone-else/adapted", "no write access to the namespace 'someone-else'"),
    ({**USER, "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": [
        {"entity": {"type": "user", "name": "me"}, "permissions": ["repo.content.read"]}]}}}}, "me/adapted", "repo.write"),
])
def test_no_write_access(fake_hub, monkeypatch, who, repo, match):
    monkeypatch.setattr(fake_hub, "whoami_result", who)
    with pytest.raises(MlmAdaptError, match=match):
        hub.check_access(repo)


@pytest.mark.parametrize("repo", ["me/adapted", "lab/adapted", "adapted"])
def test_write_access_to_own_and_organisation_namespaces(fake_hub, repo):
    assert hub.check_access(repo) == "me"


def test_uploaded_files_leave_checkpoints_behind(fake_hub, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    (out / "checkpoints" / "step-1" / "optimizer.bin").write_bytes(b"x")
    (out / "model.safetensors").write_bytes(b"weights")
    assert hub.push_folder(out, "me/adapted", private=True) == "https://hub/commit/1"
    assert fake_hub.calls["create"] == ("me/adapted", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert "checkpoints/*" in fake_hub.calls["upload"]["ignore_patterns"]
    assert set(fake_hub.uploaded) == {"model.safetensors"}
    assert not list(tmp_path.glob(".push-*"))  # the staging copy is removed


def test_train_then_push_publishes_no_local_path(fake_hub, bert_dir, data_root, tmp_path):
    out = tmp_path / "run"
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=2, push_to_hub="me/adapted"))
    sent = fake_hub.uploaded
    assert {"model.safetensors", "config.json", "README.md", "config.yaml", "metrics.json", "report.html"} <= set(sent)
    assert not any(name.startswith("checkpoints") for name in sent)
    local = {str(tmp_path), str(bert_dir), str(data_root), str(Path.home()) + "/"}
    for name, content in sent.items():
        text = content.decode("utf-8", errors="ignore")
        assert not [p for p in local if p in text], name
    config = yaml.safe_load(sent["config.yaml"])
    assert (config["model"], config["data"], config["output"]) == ("tiny-bert", "docs.txt", "run")
    assert json.loads(sent["metrics.json"])["data"] == "docs.txt"
    front = yaml.safe_load(sent["README.md"].decode().split("---")[1])
    assert front["model-index"][0]["results"][0]["dataset"]["name"] == "docs.txt"
    # What stays on disk keeps full paths: `--config OUTPUT/config.yaml` must reproduce the run here.
    assert str(bert_dir) in (out / "config.yaml").read_text()
