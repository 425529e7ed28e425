"""Configurations as flat options: YAML files, the command line and ``config.yaml``.

Configurations flatten to one level of keys named like the command-line options
(``chunk_size`` for ``--chunk-size``): that flat form is what YAML files hold and
what ``OUTPUT/config.yaml`` records. Precedence is defaults < YAML < command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlm_adapt.config import DataConfig, EvalConfig, MaskingConfig, ModelConfig, TrainConfig, field_docs
from mlm_adapt.errors import MlmAdaptError

_GROUPS = {"model": ModelConfig, "data": DataConfig, "masking": MaskingConfig}


def _own_fields(cls: type) -> list[str]:
    """Fields of ``cls`` that are plain values: a group's all, a run's bar its groups."""
    if cls in _GROUPS.values():
        return [f.name for f in dataclasses.fields(cls)]
    return [f.name for f in dataclasses.fields(cls) if f.name not in _GROUPS]


def option_names(cls: type[EvalConfig]) -> list[str]:
    """Every flat option name a configuration of ``cls`` accepts."""
    names = [n for group in _GROUPS.values() for n in _own_fields(group)]
    return names + _own_fields(cls)


def option_field(name: str) -> dataclasses.Field:
    """The dataclass field behind a flat option name (its default, its type)."""
    for cls in (*_GROUPS.values(), TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name == name and f.name in _own_fields(cls):
                return f
    raise KeyError(name)


def option_help(name: str) -> str:
    """The documentation of the field behind a flat option name (its docstring)."""
    for cls in (*_GROUPS.values(), TrainConfig):
        if name in _own_fields(cls):
            return field_docs(cls)[name]
    raise KeyError(name)


def from_options(cls: type[EvalConfig], options: Mapping[str, Any]) -> EvalConfig:
    """Build ``cls`` from flat options; unknown keys are a user error."""
    unknown = sorted(set(options) - set(option_names(cls)))
    if unknown:
        raise MlmAdaptError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(option_names(cls))}"
        )
    groups = {
        name: group(**{k: options[k] for k in _own_fields(group) if k in options})
        for name, group in _GROUPS.items()
    }
    own = {k: options[k] for k in _own_fields(cls) if k in options}
    try:
        return cls(**groups, **own)
    except TypeError as exc:  # a YAML value of the wrong kind
        raise MlmAdaptError(f"bad configuration: {exc}") from None


def to_options(config: EvalConfig) -> dict[str, Any]:
    """The flat, YAML-ready form of ``config`` (paths as strings)."""
    flat: dict[str, Any] = {}
    for name in _GROUPS:
        flat.update(dataclasses.asdict(getattr(config, name)))
    for name in _own_fields(type(config)):
        value = getattr(config, name)
        flat[name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
    return flat


def read_yaml_options(path: Path) -> dict[str, Any]:
    """Flat options from a YAML file (``--config``), keys written with - or _."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MlmAdaptError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MlmAdaptError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise MlmAdaptError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def resolve(
    cls: type[EvalConfig], cli_options: Mapping[str, Any], config_file: Path | None = None
) -> EvalConfig:
    """Defaults < YAML file < options given on the command line (``None`` = not given)."""
    options = read_yaml_options(config_file) if config_file else {}
    options.update({k: v for k, v in cli_options.items() if v is not None})
    if options.get("tapt") and "data" not in options and options.get("task_data"):
        # --tapt without --data: the task's texts are the whole corpus, read as --task-data's.
        options["data"] = options["task_data"]
        for own, task in (("split", "task_split"), ("text_column", "task_text_column")):
            if task in options and own not in options:
                options[own] = options[task]
    return from_options(cls, options)


def write_yaml(config: EvalConfig, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_options(config), sort_keys=False), encoding="utf-8")
