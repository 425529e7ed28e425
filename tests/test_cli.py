"""The command line: one `error:` line and status 2 for user mistakes; real end-to-end runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from conftest import run_main
from mlm_adapt.cli import app, main
from mlm_adapt.errors import MlmAdaptError


def _assert_user_error(code: int, err: str, match: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--mask-prob", "1.5"], "--mask-prob must be a probability"),
        (["train", "--batch-size", "0"], "--batch-size must be a positive number"),
        (["train", "--max-steps", "-3"], "--max-steps must be a positive number"),
        (["train", "--batch-size", "many"], "valid integer"),
        (["train", "--no-such-flag"], "No such option"),
        (["evaluate", "--eval-mask-prob", "0"], "--eval-mask-prob must be a probability"),
        (["evaluate", "--num-workers", "-2"], "--num-workers must be 0"),
        (["fill-mask", "no mask here"], "no [MASK] or <mask>"),
    ],
)
def test_bad_options_give_one_error_line(capsys, args, match):
    _assert_user_error(*run_main(capsys, *args)[::2], match)


def test_missing_data_path(capsys, bert_dir, tmp_path):
    code, _, err = run_main(capsys, "train", "--model", str(bert_dir), "--data", "nowhere/corpus.txt", "--output", str(tmp_path / "o"))
    _assert_user_error(code, err, "no such file")


def test_existing_output_is_refused(capsys, bert_dir, data_root, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    code, _, err = run_main(capsys, "train", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"), "--output", str(tmp_path))
    _assert_user_error(code, err, "--overwrite")


def test_debug_shows_the_traceback(bert_dir):
    with pytest.raises(MlmAdaptError, match="must be a probability"):
        main(["--debug", "train", "--mask-prob", "2"])


def test_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "fill-mask", "vocab", "probe", "demo"):
        assert command in result.output


def test_yaml_config_with_flag_override(capsys, bert_dir, data_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {bert_dir}\ndata: {data_root / 'docs.txt'}\nchunk_size: 48\nmax_steps: 2\nbatch_size: 8\nprecision: fp32\n")
    code, out, _ = run_main(capsys, "train", "--config", str(config), "--output", str(tmp_path / "o"), "--max-steps", "1")
    assert code == 0, out
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["steps"] == 1
    assert "max_steps: 1" in (tmp_path / "o" / "config.yaml").read_text()


def test_a_fractional_count_in_a_yaml_file_is_a_user_error(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("chunk_size: 100.5\n")
    code, _, err = run_main(capsys, "train", "--config", str(config), "--output", str(tmp_path / "o"))
    _assert_user_error(code, err, "--chunk-size must be a positive number, a whole one, not 100.5")


def _cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "mlm_adapt", *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


CASES = [
    ("bert_dir", "docs.txt", [], "token", "[MASK]"),
    ("bert_dir", "nested.jsonl", ["--text-column", "answers.text"], "whole-word", "<mask>"),
    ("roberta_dir", "reviews.csv", ["--text-column", "review", "--remainder", "pad", "--eval-masking", "whole-word"], "token", "[MASK]"),
    ("roberta_dir", "folder", [], "whole-word", "<mask>"),
]


@pytest.mark.slow
@pytest.mark.parametrize("model, data, extra, masking, mask", CASES, ids=[f"{c[0][:-4]}-{c[1]}-{c[3]}" for c in CASES])
def test_train_evaluate_fill_mask_end_to_end(request, data_root, tmp_path, model, data, extra, masking, mask):
    model_dir = request.getfixturevalue(model)
    out = tmp_path / "adapted"
    common = ["--data", str(data_root / data), *extra, "--chunk-size", "48", "--eval-size", "30", "--seed", "3"]
    train = _cli("train", "--model", str(model_dir), "--output", str(out), *common, "--masking", masking,
                 "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--train-size", "300")
    assert "perplexity after" in train.stdout
    assert "longer than the specified maximum" not in train.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["perplexity_after"] < metrics["perplexity_before"]

    evaluated = json.loads(_cli("evaluate", "--model", str(out), *common, "--json").stdout)
    assert evaluated["masked_tokens"] == metrics["eval_masked_tokens"]
    assert evaluated["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=1e-4)
    assert evaluated["masked_bytes"] == metrics["eval_masked_bytes"] > evaluated["masked_tokens"]
    assert evaluated["bits_per_byte"] == pytest.approx(metrics["bits_per_byte_after"], rel=1e-4)
    # The same bootstrap as the run's: same seed, same held-out documents.
    assert evaluated["perplexity_interval"] == pytest.approx(metrics["perplexity_after_interval"], rel=1e-4)
    assert evaluated["interval_resamples"] == metrics["interval_resamples"]
    if "--eval-masking" in extra:  # the options reach the run and its record, and change the held-out set
        recorded = yaml.safe_load((out / "config.yaml").read_text())
        assert (recorded["remainder"], recorded["eval_masking"]) == ("pad", "whole-word")
        plain = [a for a in common if a not in ("--eval-masking", "whole-word")]
        assert json.loads(_cli("evaluate", "--model", str(out), *plain, "--json").stdout)["masked_tokens"] != evaluated["masked_tokens"]

    text = f"the great {mask} loved the film."
    filled = json.loads(_cli("fill-mask", "--model", str(out), "--compare", str(model_dir), "--top-k", "3", "--json", text).stdout)
    assert filled[0]["text"] == text
    assert set(filled[0]["masks"][0]) == {str(out), str(model_dir)}
    assert all(len(preds) == 3 for preds in filled[0]["masks"][0].values())


@pytest.mark.slow
def test_evaluate_tokenizing_in_worker_processes_gives_the_same_perplexity(bert_dir, data_root, tmp_path):
    args = ["evaluate", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"), "--chunk-size", "48",
            "--eval-size", "30", "--json"]
    # A cache folder per run: the second run must tokenize, not read the first run's tokens.
    runs = {n: json.loads(_cli(*args, "--num-workers", n, env={"MLM_ADAPT_CACHE": str(tmp_path / n)}).stdout)
            for n in ("0", "2")}
    assert list((tmp_path / "2" / "tokens").glob("*.npz"))
    assert runs["2"]["masked_tokens"] == runs["0"]["masked_tokens"] > 0
    assert runs["2"]["perplexity"] == pytest.approx(runs["0"]["perplexity"], rel=1e-6)


@pytest.mark.slow
def test_fill_mask_table_and_error_exit_in_a_real_process(bert_dir):
    table = _cli("fill-mask", "--model", str(bert_dir), "the [MASK] film.", "a [MASK] [MASK] plot.")
    assert "mask 2" in table.stdout
    bad = _cli("fill-mask", "--model", str(bert_dir), "nothing to fill", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


def _command(name: str):
    import typer.main

    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize("command, config_class", [("train", "TrainConfig"), ("evaluate", "EvalConfig")])
def test_every_config_option_is_a_flag_whose_help_shows_the_configs_default(command, config_class):
    import dataclasses

    from mlm_adapt import config as cfg
    from mlm_adapt import flat_options

    not_options = ("ctx", "config", "recipe", "json_out", "pseudo", "max_sentences", "compare", "pll", "per_text", "words",
                   "words_by")  # command-only switches
    params = {p.name: p for p in _command(command).params if p.name not in not_options}
    names = {{"probe": "probes"}.get(n, n) for n in params}
    # evaluate leaves out what cannot change the held-out set or its masks.
    not_for_evaluate = {"masking", "mask_prob", "train_size", "shuffle_buffer"} if command == "evaluate" else set()
    assert names == set(flat_options.option_names(getattr(cfg, config_class))) - not_for_evaluate
    for name, param in params.items():
        default = flat_options.option_field({"probe": "probes"}.get(name, name)).default
        if default is None or default is False or default is dataclasses.MISSING or name == "mask_prob":
            continue
        assert param.help.endswith(f"(default: {default})"), (name, param.help)
    for name, literal in (("remainder", cfg.Remainder), ("eval_masking", cfg.Masking), ("precision", cfg.Precision)):
        assert params[name].help.startswith("|".join(cfg.choices(literal)) + ":")
    if command == "train":
        assert "0.15 token, 0.2 whole-word" in params["mask_prob"].help


def test_a_flag_reaches_the_config_under_its_own_name(capsys, monkeypatch, tmp_path):
    from mlm_adapt.training import loop as training

    class Stop(Exception):
        """Raised by the stand-in for train once it has the config: nothing else raises it."""

    seen = {}

    def record(config):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(training, "train", record)
    with pytest.raises(Stop):
        main(["train", "--probe", "a [MASK].", "--warmup-ratio", "0.25", "--remainder", "pad", "--output", str(tmp_path)])
    config = seen["config"]
    assert (config.probes, config.warmup_ratio, config.data.remainder, config.output) == (("a [MASK].",), 0.25, "pad", tmp_path)
    assert config.epochs == 3 and config.data.chunk_size == 128  # not given: the config's defaults


def test_version(capsys):
    from importlib.metadata import version

    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"mlm-adapt {version('mlm-adapt')}"


def test_the_train_command_and_not_the_library_tunes_the_process(monkeypatch, tmp_path):
    from mlm_adapt import speed
    from mlm_adapt.training import loop as training

    class Stop(Exception):
        pass

    seen = []
    monkeypatch.setattr(speed, "tune_process", lambda device="cpu": seen.append(device) or True)
    monkeypatch.setattr(training, "train", lambda config: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        main(["train", "--output", str(tmp_path)])
    assert seen == ["cpu"]  # before the library's train(), which never tunes it
