"""The kinds of value a configuration holds, their checks, and the documentation of each
field: a field's docstring (the string literal under it, as in litgpt's ``args.py``) is
its one description, which ``--help`` shows.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import numbers
import textwrap
import typing
from functools import lru_cache
from typing import Literal

from mlm_adapt.errors import MlmAdaptError

Masking = Literal["token", "whole-word"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Remainder = Literal["drop", "pad"]
DocumentBoundary = Literal["line", "blank-line", "file"]
ReportTo = Literal["none", "tensorboard", "wandb", "mlflow", "trackio"]
Select = Literal["last", "best"]

# The seeds' rates: 15% of tokens as in BERT; 20% of words for whole-word masking
# as in the Hugging Face course's whole_word_masking_data_collator.
DEFAULT_MASK_PROB = {"token": 0.15, "whole-word": 0.2}
DEFAULT_TRAIN_SIZE = 10_000
# Defaults of command-only options, shared by the library functions and their flags.
DEFAULT_TOP_K = 5  # fill-mask predictions per mask, as the Hugging Face pipeline's
DEFAULT_PSEUDO_TEXTS = 100  # evaluate --pseudo: each text costs one forward per token
DEFAULT_DEMO_MINUTES = 10.0
# evaluate --words-by: rank what changed by a word's total change or its mean per occurrence.
WordRanking = Literal["total", "mean"]
# Ranking by the mean, a word needs this many occurrences. On the demo's 300 held-out
# reviews, 3 let one-off words lead ("whimsy", 3 occurrences, -3.2 nats each); from 5 the
# list is the domain's own words ("characters", "thriller", "script", "story", "movie").
WORD_MIN_OCCURRENCES = 5


def choices(literal) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` option type: the one list validation and help share."""
    return typing.get_args(literal)


def choice(name: str, value: str, literal) -> None:
    allowed = choices(literal)
    if value not in allowed:
        raise MlmAdaptError(f"--{flag(name)} must be one of {', '.join(allowed)}, not {value!r}")


def positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise MlmAdaptError(f"--{flag(name)} must be a positive number, not {value!r}")


def count(name: str, value: int | None, *, optional: bool = False) -> None:
    """A positive whole number (sizes, steps, counts): ``chunk_size: 100.5`` in a YAML file
    is refused here, not deep in the chunking arithmetic."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MlmAdaptError(f"--{flag(name)} must be a positive number, a whole one, not {value!r}")


def non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise MlmAdaptError(f"--{flag(name)} must be zero or a positive number, not {value!r}")


def probability(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise MlmAdaptError(f"--{flag(name)} must be a probability strictly between 0 and 1, not {value!r}")


def flag(name: str) -> str:
    return name.replace("_", "-")


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring in ``cls`` and its dataclass bases, joined into one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
