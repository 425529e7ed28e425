"""The README is a user's guide: its own-data commands run as written, its set-up comes
first, and CI runs exactly its test command."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> list[str]:
    """The command lines of the first ```bash block after ``marker``."""
    rest = README[README.index(marker):]
    body = rest[rest.index("```bash") + len("```bash"):]
    return [line for line in body[:body.index("```")].splitlines() if line.strip()]


def test_the_readme_own_data_commands_run_as_written(bert_dir, data_root, tmp_path):
    # The README names distilbert-base-uncased and my-corpus.txt: a local folder of that
    # name (the tiny BERT) is what transformers loads first, and the corpus is the fixture's.
    shutil.copytree(bert_dir, tmp_path / "distilbert-base-uncased")
    shutil.copy(data_root / "docs.txt", tmp_path / "my-corpus.txt")
    commands = _block_after("<!-- own-data")
    assert [shlex.split(c)[:2] for c in commands] == [["mlm-adapt", "train"], ["mlm-adapt", "fill-mask"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    for command in commands:
        argv = [sys.executable, "-m", "mlm_adapt", *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-3000:])
    output = tmp_path / "runs" / "my-corpus"
    for name in ("model.safetensors", "metrics.json", "report.html", "README.md", "config.yaml"):
        assert (output / name).is_file(), name  # what the README's table says lands there
    assert "This is a great [MASK]." in done.stdout


def test_the_first_screen_has_the_set_up_and_a_train_command_on_a_local_file():
    first = README.splitlines()[:40]
    assert any("pip install torch==" in line and "pip install -e ." in line for line in first)
    assert any(line.startswith("mlm-adapt train") and "--data my-corpus.txt" in line for line in first)


def test_ci_runs_exactly_the_readmes_test_command():
    command = _block_after("## Tests")
    assert len(command) == 1
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == command[0]


def test_the_readme_is_a_guide_not_a_notebook():
    assert len(README.splitlines()) <= 250
    for link in ("docs/guide.md", "docs/statistics.md", "docs/performance.md", "docs/architecture.md"):
        assert link in README and (ROOT / link).is_file(), link
