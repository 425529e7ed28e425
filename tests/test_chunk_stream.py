"""--streaming: the same chunks as the in-memory path, held-out documents kept apart,
seeded shuffling, exact resume, and end-to-end runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FrameTokenizer, free_port, synthetic_tokens, train_config
from mlm_adapt.config import DataConfig, ModelConfig
from mlm_adapt.data.chunk_stream import _training_tokens, held_out, read_eval_documents, rebatch, shuffle_buffer, stream_chunks
from mlm_adapt.data.chunking import Chunks, chunk_documents
from mlm_adapt.data.corpus import load_corpus
from mlm_adapt.data.tokenization import TextEncoder, TokenizedCorpus, concat_tokens
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.modeling.loading import load_tokenizer
from mlm_adapt.training.loop import train

TIMING = {"train_samples_per_second", "train_runtime_seconds", "steps_run", "seconds"}


def _slice(tokens: TokenizedCorpus, first: int, last: int) -> TokenizedCorpus:
    """Documents first..last-1 of ``tokens`` as their own corpus."""
    begin, end = tokens.offsets[first], tokens.offsets[last]
    return TokenizedCorpus(tokens.ids[begin:end], tokens.word_starts[begin:end], tokens.special[begin:end],
                           tokens.offsets[first : last + 1] - begin)


@given(lengths=st.lists(st.integers(0, 50), min_size=1, max_size=25), cuts=st.lists(st.integers(0, 25), max_size=6),
       chunk=st.integers(4, 30), remainder=st.sampled_from(["drop", "pad"]), seed=st.integers(0, 99))
@settings(max_examples=120, deadline=None)
def test_streamed_chunks_equal_chunking_all_documents_at_once(lengths, cuts, chunk, remainder, seed):
    tokens = synthetic_tokens(lengths, seed)
    tokens.special[np.random.default_rng(seed).random(tokens.ids.size) < 0.05] = True  # literal [MASK]s in the text
    bounds = sorted({0, len(lengths), *[min(c, len(lengths)) for c in cuts]})
    batches = [_slice(tokens, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    streamed = list(stream_chunks(batches, chunk, FrameTokenizer, remainder))
    whole = chunk_documents(tokens, np.arange(len(lengths)), chunk, FrameTokenizer, remainder) \
        if sum(lengths) + len(lengths) - 1 > 0 else None
    got = np.concatenate([c.input_ids for c in streamed]) if streamed else np.zeros((0, chunk), np.int64)
    assert np.array_equal(got, whole.input_ids if whole is not None else got)
    for name in ("attention_mask", "word_ids"):
        joined = np.concatenate([getattr(c, name) for c in streamed]) if streamed else got
        assert np.array_equal(joined, getattr(whole, name) if whole is not None else joined)


def _rows(count: int, start: int = 0) -> Chunks:
    ids = np.arange(start, start + count, dtype=np.int64)[:, None].repeat(3, axis=1)
    return Chunks(ids, np.ones_like(ids), ids.copy())


@given(blocks=st.lists(st.integers(1, 40), min_size=1, max_size=12), size=st.integers(1, 60), seed=st.integers(0, 9))
@settings(max_examples=80, deadline=None)
def test_shuffle_buffer_is_a_seeded_permutation(blocks, size, seed):
    starts = np.cumsum([0] + blocks[:-1])
    def run() -> np.ndarray:
        out = shuffle_buffer((_rows(n, s) for n, s in zip(blocks, starts)), size, np.random.default_rng(seed))
        return np.concatenate([c.input_ids[:, 0] for c in out])
    first = run()
    assert sorted(first.tolist()) == list(range(sum(blocks)))
    assert np.array_equal(first, run())


def test_shuffle_buffer_mixes_and_starts_before_the_stream_ends():
    out = shuffle_buffer((_rows(10, 10 * i) for i in range(100)), 50, np.random.default_rng(0))
    first = next(out)  # released as soon as the pool outgrows 50 rows, not at the end
    assert len(first) == 10 and first.input_ids[:, 0].max() < 60
    order = np.concatenate([first.input_ids[:, 0]] + [c.input_ids[:, 0] for c in out])
    assert not np.array_equal(order, np.arange(1000))


@given(blocks=st.lists(st.integers(0, 30), max_size=10), size=st.integers(1, 25))
@settings(max_examples=60, deadline=None)
def test_rebatch_gives_full_batches_in_order(blocks, size):
    starts = np.cumsum([0] + blocks[:-1]) if blocks else []
    out = list(rebatch((_rows(n, s) for n, s in zip(blocks, starts)), size))
    assert all(len(b) == size for b in out[:-1])
    joined = np.concatenate([b.input_ids[:, 0] for b in out]) if out else np.zeros(0)
    assert joined.tolist() == list(range(sum(blocks)))


def test_held_out_draw_is_seeded_and_about_ten_percent():
    indices = np.arange(200_000)
    drawn = held_out(3, indices)
    assert drawn.mean() == pytest.approx(0.1, abs=0.005)
    assert np.array_equal(drawn, held_out(3, indices))
    assert np.array_equal(drawn[5000:6000], held_out(3, indices[5000:6000]))  # a pure function of the index
    assert (drawn != held_out(4, indices)).mean() > 0.1


def test_eval_and_training_documents_are_disjoint_and_cover_the_stream(bert_dir, data_root):
    tokenizer = load_tokenizer(ModelConfig(str(bert_dir)))
    encoder = TextEncoder.from_tokenizer(tokenizer)
    corpus = load_corpus(DataConfig(data=str(data_root / "docs.txt"), streaming=True))
    held, last = read_eval_documents(corpus, encoder, eval_tokens=500, seed=1)
    docs = lambda t: {tuple(t.ids[t.offsets[d]:t.offsets[d + 1]]) for d in range(t.num_documents)}  # noqa: E731
    shards = [docs(concat_tokens(list(_training_tokens(corpus, encoder, 1, last, rank, 2)))) for rank in (0, 1)]
    everything = docs(concat_tokens([encoder.encode(texts) for texts in corpus.batches()]))
    assert held.ids.size >= 500 and 0 < held.num_documents < 0.2 * len(everything)
    assert not (docs(held) & shards[0]) and not (docs(held) & shards[1]) and not (shards[0] & shards[1])
    assert docs(held) | shards[0] | shards[1] == everything


def test_streamed_nested_column_reads_like_the_in_memory_corpus(data_root):
    spec = dict(data=str(data_root / "nested.jsonl"), text_column="answers.text")
    in_memory = [t for batch in load_corpus(DataConfig(**spec)).batches(64) for t in batch]
    streamed = [t for batch in load_corpus(DataConfig(**spec, streaming=True)).batches(64) for t in batch]
    assert streamed == in_memory and len(streamed) == 400


def test_streamed_split_head_and_bad_inputs(data_root):
    head = load_corpus(DataConfig(data=str(data_root / "docs.txt"), split="train[:50]", streaming=True))
    assert sum(len(b) for b in head.batches()) == 50
    with pytest.raises(MlmAdaptError, match="only a split name or a head"):
        load_corpus(DataConfig(data=str(data_root / "docs.txt"), split="train[10:20]", streaming=True))
    with pytest.raises(MlmAdaptError, match="'body' not found; the data has columns: label, review"):
        list(load_corpus(DataConfig(data=str(data_root / "reviews.csv"), text_column="body", streaming=True)).batches())
    with pytest.raises(MlmAdaptError, match="needs --max-steps"):
        train_config("m", data_root / "docs.txt", "out", streaming=True)
    with pytest.raises(MlmAdaptError, match="--train-size samples chunks"):
        DataConfig(data="x.txt", train_size=500, streaming=True)


def test_streamed_run_resumes_exactly_from_a_checkpoint(bert_no_dropout, data_root, tmp_path):
    options = dict(max_steps=6, save_steps=3, batch_size=8, streaming=True, shuffle_buffer=64)
    full = train(train_config(bert_no_dropout, data_root / "docs.txt", tmp_path / "full", **options))
    assert full["steps"] == 6 and full["perplexity_after"] < full["perplexity_before"]
    assert full["train_chunks"] == 48 and full["documents"] is None
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", tmp_path / "resumed" / "checkpoints" / "step-3")
    resumed = train(train_config(bert_no_dropout, data_root / "docs.txt", tmp_path / "resumed", resume=True, **options))
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in full.items() if k not in TIMING}
    assert (full["steps_run"], resumed["steps_run"]) == (6, 3)


def test_streamed_train_chunks_are_counted_not_derived(bert_dir, data_root, tmp_path, monkeypatch):
    # Batches shorter than --batch-size (as a stream's last batch can be): the count must
    # be what was trained on, not steps x batch size.
    from mlm_adapt.data.splits import StreamSource
    from mlm_adapt.modeling import preparation

    real = preparation.load_split

    def short_batches(*args, **kwargs):
        data = real(*args, **kwargs)
        read = data.train.read
        return dataclasses.replace(data, train=StreamSource(lambda r, w, size: (b.select(np.arange(5)) for b in read(r, w, size))))

    monkeypatch.setattr(preparation, "load_split", short_batches)
    metrics = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=4, batch_size=8, streaming=True))
    assert metrics["train_chunks"] == metrics["chunks_trained"] == 4 * 5


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlm_adapt", *args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.slow
def test_streamed_train_then_evaluate_from_the_command_line(bert_dir, data_root, tmp_path):
    data = ["--data", str(data_root / "nested.jsonl"), "--text-column", "answers.text", "--streaming",
            "--chunk-size", "48", "--eval-size", "30"]
    run = _cli("train", "--model", str(bert_dir), *data, "--max-steps", "5", "--batch-size", "8", "--lr", "1e-3",
               "--output", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == 5 and metrics["perplexity_after"] < metrics["perplexity_before"]
    again = _cli("evaluate", "--model", str(tmp_path / "out"), *data, "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout)
    assert result["masked_tokens"] == metrics["eval_masked_tokens"]
    assert result["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=1e-4)
    assert result["interval_resamples"] == metrics["interval_resamples"] and "documents" in result["interval_resamples"]
    missing = _cli("train", "--model", str(bert_dir), *data, "--output", str(tmp_path / "no"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "error: --streaming needs --max-steps: the length of a stream is not known in advance"]


@pytest.mark.slow
def test_two_processes_stream_their_own_shards(bert_no_dropout, data_root, tmp_path):
    common = ["train", "--model", str(bert_no_dropout), "--data", str(data_root / "docs.txt"), "--streaming",
              "--chunk-size", "48", "--eval-size", "40", "--max-steps", "4", "--batch-size", "8", "--precision", "fp32",
              "--lr", "1e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = _cli(*common, "--output", str(tmp_path / "one"), env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                          "-m", "mlm_adapt", *common, "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert double["perplexity_before"] == pytest.approx(single["perplexity_before"], rel=1e-5)  # same held-out set
    assert double["eval_masked_tokens"] == single["eval_masked_tokens"]
    assert (single["processes"], double["processes"]) == (1, 2)
    assert double["train_chunks"] == 2 * single["train_chunks"]  # each process trains on its own batches
    assert double["perplexity_after"] < double["perplexity_before"]


def test_prefetch_hands_errors_to_the_consumer_and_stops_when_closed():
    import itertools
    import threading
    import time

    from mlm_adapt.data.batching import prefetch

    def failing():
        yield 1
        raise MlmAdaptError("no training chunk")

    items = prefetch(failing())
    assert next(items) == 1
    with pytest.raises(MlmAdaptError, match="no training chunk"):
        next(items)
    endless = prefetch(itertools.count())
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()  # training ended: the producer thread must not run on
    deadline = time.monotonic() + 5
    while any(t.name == "mlm-adapt-stream" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "mlm-adapt-stream" for t in threading.enumerate())


def test_streamed_training_tokens_are_the_same_from_worker_processes(bert_dir, data_root):
    tokenizer = load_tokenizer(ModelConfig(str(bert_dir)))
    encoder = TextEncoder.from_tokenizer(tokenizer)
    corpus = load_corpus(DataConfig(data=str(data_root / "docs.txt"), streaming=True))
    alone = concat_tokens(list(_training_tokens(corpus, encoder, 1, 40, 0, 1)))
    spread = concat_tokens(list(_training_tokens(corpus, encoder, 1, 40, 0, 1, num_workers=2)))
    assert alone.num_documents > 100
    assert (alone.ids == spread.ids).all() and (alone.offsets == spread.offsets).all()
    assert (alone.word_starts == spread.word_starts).all()
