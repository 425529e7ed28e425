"""Flat options: precedence defaults < YAML < command line, and the round trip through config.yaml."""

from __future__ import annotations

import pytest

from mlm_adapt.config import EvalConfig, TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.flat_options import from_options, option_names, resolve, to_options, write_yaml


def test_precedence_defaults_yaml_command_line(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lr: 0.001\nchunk-size: 64\nmasking: whole-word\n")
    c = resolve(TrainConfig, {"lr": 0.01, "chunk_size": None}, yaml_file)
    assert c.lr == 0.01  # command line beats YAML
    assert c.data.chunk_size == 64  # YAML beats default
    assert c.masking.masking == "whole-word"
    assert c.batch_size == 64  # default


def test_unknown_yaml_keys_are_errors(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("learning_rate: 0.1\n")
    with pytest.raises(MlmAdaptError, match="unknown option.*learning_rate"):
        resolve(TrainConfig, {}, yaml_file)


def test_yaml_round_trip_reproduces_the_config(tmp_path):
    c = from_options(TrainConfig, {"model": "m", "data": "d.txt", "masking": "whole-word", "max_steps": 3, "output": "o"})
    write_yaml(c, tmp_path / "config.yaml")
    assert resolve(TrainConfig, {}, tmp_path / "config.yaml") == c


def test_eval_config_accepts_only_its_options():
    assert "lr" not in option_names(EvalConfig)
    with pytest.raises(MlmAdaptError, match="unknown option"):
        from_options(EvalConfig, {"lr": 1e-4})
    assert set(to_options(EvalConfig())) == set(option_names(EvalConfig))
