"""Configuration: frozen, typed dataclasses validated at construction (``sources``: model, data,
masking and evaluation; ``training``: a run; ``tools``: the commands around a run), the kinds of value they hold and
each field's documentation (``fields``).

Precedence is defaults < YAML (``--config``) < command line; the flat form YAML files
and ``OUTPUT/config.yaml`` hold is ``mlm_adapt.flat_options``'.

May import: ``mlm_adapt.errors`` only: every stage imports this package.
"""

from mlm_adapt.config.comparison import CompareConfig
from mlm_adapt.config.fields import (
                                     DEFAULT_DEMO_MINUTES,
                                     DEFAULT_MASK_PROB,
                                     DEFAULT_PSEUDO_TEXTS,
                                     DEFAULT_TOP_K,
                                     DEFAULT_TRAIN_SIZE,
                                     WORD_MIN_OCCURRENCES,
                                     DocumentBoundary,
                                     Masking,
                                     Precision,
                                     Remainder,
                                     ReportTo,
                                     Select,
                                     WordRanking,
                                     choices,
                                     field_docs,
)
from mlm_adapt.config.sources import DataConfig, EvalConfig, MaskingConfig, ModelConfig, cache_home
from mlm_adapt.config.tools import AssessConfig, BlendConfig, ProbeConfig, SelectConfig, TaskConfig, VocabConfig
from mlm_adapt.config.training import LoraSettings, Rule, TrainConfig

__all__ = ["CompareConfig",
           "DEFAULT_DEMO_MINUTES", "DEFAULT_MASK_PROB", "DEFAULT_PSEUDO_TEXTS", "DEFAULT_TOP_K", "DEFAULT_TRAIN_SIZE", "AssessConfig",
           "BlendConfig", "DataConfig", "DocumentBoundary", "EvalConfig", "LoraSettings", "Masking", "MaskingConfig", "ModelConfig",
           "Precision",
           "ProbeConfig", "Remainder", "ReportTo", "Rule", "Select", "SelectConfig", "TaskConfig", "TrainConfig", "VocabConfig",
           "WORD_MIN_OCCURRENCES", "WordRanking", "cache_home", "choices", "field_docs"]
