"""Perplexity is exp(total NLL / masked tokens) over fixed masks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlm_adapt.chunking import Chunks
from mlm_adapt.config import MaskingConfig
from mlm_adapt.evaluation import EvalResult, mask_eval_set, perplexity
from mlm_adapt.masking import MaskingVocab


@given(loss=st.floats(0.0, 20.0), tokens=st.integers(1, 10**6))
def test_perplexity_of_a_known_loss_is_exact(loss, tokens):
    assert perplexity(loss * tokens, tokens) == pytest.approx(math.exp(loss), rel=1e-12)


def test_perplexity_weights_tokens_not_batches():
    # Batch A: 100 tokens at mean loss 1; batch B: 1 token at loss 5.
    result = EvalResult(nll_sum=100 * 1.0 + 5.0, masked_tokens=101)
    assert result.loss == pytest.approx(105 / 101)
    assert result.perplexity == pytest.approx(math.exp(105 / 101))
    mean_of_batch_means = (1.0 + 5.0) / 2  # what the seeds compute: e^3 ~ 20, not ~2.83
    assert result.perplexity < math.exp(mean_of_batch_means) / 5


def test_perplexity_overflow_and_empty():
    assert perplexity(1e6, 1) == float("inf")
    assert math.isnan(perplexity(0.0, 0))


def test_eval_masks_are_drawn_once_per_seed():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, size=(20, 16))
    words = np.tile(np.arange(16), (20, 1))
    words[:, 0] = words[:, -1] = -1
    chunks = Chunks(ids, np.ones_like(ids), words)
    vocab = MaskingVocab(4, np.arange(5, 50))
    a = mask_eval_set(chunks, MaskingConfig(), vocab, seed=3)
    b = mask_eval_set(chunks, MaskingConfig(masking="whole-word"), vocab, seed=3)  # training scheme is irrelevant
    c = mask_eval_set(chunks, MaskingConfig(), vocab, seed=4)
    assert (a.labels == b.labels).all() and (a.input_ids == b.input_ids).all()
    assert (a.labels != c.labels).any()
    assert 0 < a.masked_tokens < ids.size
