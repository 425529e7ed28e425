"""The shipped example configs are valid, and the demo's match what `mlm-adapt demo` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlm_adapt.config import TrainConfig
from mlm_adapt.demo.assets import DemoAssets
from mlm_adapt.demo.stages import stage_configs
from mlm_adapt.flat_options import resolve, to_options

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path):
    assert isinstance(resolve(TrainConfig, {}, path), TrainConfig)


def test_demo_examples_match_the_demo_command():
    cache = Path("~/.cache/mlm-adapt/demo").expanduser()
    assets = DemoAssets(cache / "all-MiniLM-L6-v2", cache / "bbc-news", cache / "rotten-tomatoes" / "reviews.csv")
    for name, expected in zip(("demo-general.yaml", "demo-adapted.yaml"), stage_configs(assets, Path("mlm-adapt-demo"))):
        loaded = to_options(resolve(TrainConfig, {}, EXAMPLES / name))
        for key in ("data", "general_data", "task_data"):
            loaded[key] = loaded[key] and str(Path(loaded[key]).expanduser())
        assert loaded == to_options(expected)
