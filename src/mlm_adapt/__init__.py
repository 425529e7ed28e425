"""mlm-adapt: domain adaptation of masked language models.

The library API mirrors the command line with the same defaults::

    from mlm_adapt import TrainConfig, DataConfig, ModelConfig, train, evaluate, fill_mask

    metrics = train(TrainConfig(model=ModelConfig("distilbert-base-uncased"),
                                data=DataConfig("imdb"), output="runs/imdb"))

Names are imported on first use, so ``import mlm_adapt`` (and ``mlm-adapt --help``)
does not pay for torch and transformers until they are needed.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DataConfig": "mlm_adapt.config",
    "EvalConfig": "mlm_adapt.config",
    "MaskingConfig": "mlm_adapt.config",
    "ModelConfig": "mlm_adapt.config",
    "TrainConfig": "mlm_adapt.config",
    "CompareConfig": "mlm_adapt.config",
    "MlmAdaptError": "mlm_adapt.errors",
    "FillMask": "mlm_adapt.evaluation.inference",
    "fill_mask": "mlm_adapt.evaluation.inference",
    "evaluate": "mlm_adapt.evaluation.scoring",
    "train": "mlm_adapt.training.loop",
    "compare": "mlm_adapt.comparison",
    "run_demo": "mlm_adapt.demo",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlm_adapt' has no attribute {name!r}")
