"""Bootstrap intervals: seeded, holding the estimate, paired, and resampling documents."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_adapt.evaluation.intervals import perplexity_interval, pieces
from mlm_adapt.evaluation.perplexity import perplexity


def _rows(seed: int, n: int):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 30, size=n)
    return tokens * rng.uniform(0.5, 8.0, size=n), tokens  # NLL sums: 0.5-8 nats per token


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(10, 300))
def test_bootstrap_interval_is_seeded_and_holds_the_estimate(seed, n):

    nll, tokens = _rows(seed, n)
    low, high = perplexity_interval(nll, tokens, seed=7)
    assert (low, high) == perplexity_interval(nll, tokens, seed=7)
    assert low <= perplexity(nll.sum(), tokens.sum()) <= high
    assert low < high


def test_paired_interval_of_a_model_against_itself_and_a_better_one():

    nll, tokens = _rows(0, 200)
    assert perplexity_interval(nll, tokens, seed=1, baseline=nll) == pytest.approx((1.0, 1.0))
    better = nll * 0.9  # 10% less NLL on every chunk: e^(-0.1 * mean loss) per token
    low, high = perplexity_interval(better, tokens, seed=1, baseline=nll)
    assert high < 1.0
    noisy = nll * np.random.default_rng(3).uniform(0.97, 1.03, size=len(nll))  # no real change
    low, high = perplexity_interval(noisy, tokens, seed=1, baseline=nll)
    assert low < 1.0 < high


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(10, 100), copies=st.integers(2, 6))
@settings(max_examples=30, deadline=None)
def test_intervals_resample_documents_not_their_correlated_chunks(seed, n, copies):

    nll, tokens = _rows(seed, n)
    documents = np.arange(n)
    # One chunk per document: resampling documents is resampling chunks.
    assert perplexity_interval(nll, tokens, 7, groups=documents) == perplexity_interval(nll, tokens, 7)
    # Each document cut into `copies` identical chunks: no more information than one chunk
    # each, so the document interval is the one-chunk-each interval; chunk by chunk it is
    # (wrongly) narrower.
    many = [np.repeat(a, copies) for a in (nll, tokens, documents)]
    by_document = perplexity_interval(*many[:2], 7, groups=many[2])
    assert by_document == pytest.approx(perplexity_interval(nll, tokens, 7), rel=1e-9)
    by_chunk = perplexity_interval(*many[:2], 7)
    assert by_chunk[1] / by_chunk[0] < by_document[1] / by_document[0]
    paired = perplexity_interval(many[0] * 0.9, many[1], 7, baseline=many[0], groups=many[2])
    assert paired[1] < 1.0


def test_one_document_falls_back_to_resampling_chunks():
    from mlm_adapt.evaluation.perplexity import EvalResult, resampled_units

    nll, tokens = _rows(0, 50)
    same = np.zeros(50, dtype=np.int64)
    low, high = perplexity_interval(nll, tokens, 3, groups=same)
    assert (low, high) == perplexity_interval(nll, tokens, 3) and low < high
    assert resampled_units(EvalResult(nll.sum(), int(tokens.sum()), 0, nll, tokens, same)) == "50 chunks"
    assert resampled_units(EvalResult(nll.sum(), int(tokens.sum()), 0, nll, tokens, np.arange(50) // 5)) == "10 documents"


@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 12), width=st.integers(3, 20), documents=st.booleans())
@settings(max_examples=60, deadline=None)
def test_pieces_are_the_runs_of_one_document_within_a_row(seed, rows, width, documents):
    rng = np.random.default_rng(seed)
    masked = rng.random((rows, width)) < 0.4
    token_nll = np.where(masked, rng.uniform(0.1, 9, (rows, width)), 0.0)
    # Documents run on through the stream: non-decreasing along rows and from row to row.
    numbering = np.cumsum(rng.random(rows * width) < 0.15).reshape(rows, width) if documents else None
    nll, tokens, docs, owners = pieces(token_nll, masked, numbering)
    assert nll.sum() == pytest.approx(token_nll.sum()) and tokens.sum() == masked.sum()
    if not documents:
        assert docs is None and (owners == np.arange(rows)).all() and (tokens == masked.sum(axis=1)).all()
        return
    expected: dict[tuple[int, int], list[float]] = {}
    for r, c in zip(*np.nonzero(masked)):
        expected.setdefault((int(r), int(numbering[r, c])), []).append(token_nll[r, c])
    assert list(zip(owners.tolist(), docs.tolist())) == list(expected)  # one piece per (row, document), in order
    assert nll == pytest.approx([sum(v) for v in expected.values()])
    assert tokens.tolist() == [len(v) for v in expected.values()]
