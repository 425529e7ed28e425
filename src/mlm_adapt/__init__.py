"""mlm-adapt: domain adaptation of masked language models.

The library API mirrors the command line with the same defaults::

    from mlm_adapt import TrainConfig, DataConfig, ModelConfig, train, evaluate, fill_mask

    metrics = train(TrainConfig(model=ModelConfig("distilbert-base-uncased"),
                                data=DataConfig("imdb"), output="runs/imdb"))
"""

from mlm_adapt.config import DataConfig, EvalConfig, MaskingConfig, ModelConfig, TrainConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.inference import FillMask, fill_mask
from mlm_adapt.training import evaluate, train

__all__ = [
    "DataConfig",
    "EvalConfig",
    "FillMask",
    "MaskingConfig",
    "MlmAdaptError",
    "ModelConfig",
    "TrainConfig",
    "evaluate",
    "fill_mask",
    "train",
]
__version__ = "0.1.0"
