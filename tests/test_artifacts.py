"""The output folder: refused unless empty or --overwrite, files moved in whole, a manifest
so --overwrite replaces only what mlm-adapt wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.outputs import artifacts


class FakeSaver:
    """Writes the given files the way save_pretrained would."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    def save_pretrained(self, folder, **kwargs):
        for name, text in self.files.items():
            (Path(folder) / name).write_text(text)


def _save(output: Path, model_files: dict[str, str], metrics: dict | None = None) -> list[str]:
    return artifacts.save_final(output, FakeSaver(model_files), FakeSaver({"tokenizer.json": "{}"}), metrics or {"ok": 1})


def test_a_folder_holding_files_is_refused_without_overwrite(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(MlmAdaptError, match="already holds files; pass --overwrite"):
        artifacts.prepare_output(tmp_path, overwrite=False)
    assert artifacts.prepare_output(tmp_path, overwrite=True) == tmp_path
    with pytest.raises(MlmAdaptError, match="is a file, not a folder"):
        artifacts.prepare_output(tmp_path / "mine.txt", overwrite=True)


def test_overwrite_replaces_and_removes_only_files_mlm_adapt_wrote(tmp_path):
    first = _save(tmp_path, {"model.safetensors": "old weights", "old-extra.json": "{}"})
    assert set(first) == {"model.safetensors", "old-extra.json", "tokenizer.json", "metrics.json"}
    (tmp_path / "notes.txt").write_text("the user's own")
    second = _save(tmp_path, {"model.safetensors": "new weights"}, {"ok": 2})
    assert (tmp_path / "model.safetensors").read_text() == "new weights"
    assert not (tmp_path / "old-extra.json").exists()  # stale: written by the first run only
    assert (tmp_path / "notes.txt").read_text() == "the user's own"
    assert artifacts.read_manifest(tmp_path) == sorted(second)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"ok": 2}
    assert not list(tmp_path.glob(".staging-*"))


def test_non_finite_metrics_are_written_as_parseable_strings(tmp_path):
    _save(tmp_path, {"model.safetensors": "w"}, {"perplexity": float("inf"), "history": [{"loss": float("nan")}]})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert float(saved["perplexity"]) == float("inf") and saved["history"][0]["loss"] == "nan"
