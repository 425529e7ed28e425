"""``mlm-adapt select``: the pool documents nearest a task's texts, never a copy of one, in
memory that does not grow with the pool."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import _save, _wordpiece_tokenizer, run_main
from mlm_adapt.config import DataConfig, ModelConfig, SelectConfig
from mlm_adapt.errors import MlmAdaptError

SPORT = "match goal team striker keeper league cup referee season coach stadium penalty".split()
COOKING = "recipe oven flour butter sugar garlic simmer sauce knife pan dough spice".split()
GLUE = "the a of and with after before in on".split()


def topic_texts(words: list[str], count: int, seed: int, length: int = 14) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) if i % 4 else rng.choice(GLUE) for i in range(length)) + "." for _ in range(count)]


@pytest.fixture(scope="module")
def topic_model(tmp_path_factory) -> Path:
    """A tiny random BERT whose WordPiece vocabulary has both topics' words."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = _wordpiece_tokenizer(topic_texts(SPORT, 200, 1) + topic_texts(COOKING, 200, 2))
    config = BertConfig(vocab_size=len(tokenizer), num_hidden_layers=2, max_position_embeddings=128, hidden_size=32,
                        num_attention_heads=2, intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    return _save(BertForMaskedLM, config, tokenizer, tmp_path_factory.mktemp("models") / "topics")


def _jsonl(path: Path, texts: list[str], **extra) -> Path:
    path.write_text("".join(json.dumps({"text": t, **extra}) + "\n" for t in texts), encoding="utf-8")
    return path


def _config(model: Path, pool: Path, like: Path, output: Path, top: int, **pool_options) -> SelectConfig:
    return SelectConfig(pool=DataConfig(str(pool), **pool_options), like=DataConfig(str(like)), output=output, top=top,
                        model=ModelConfig(str(model)), precision="fp32")


def test_select_picks_the_tasks_topic(topic_model, tmp_path):
    from mlm_adapt.training.curation import select

    like = _jsonl(tmp_path / "task.jsonl", topic_texts(SPORT, 30, seed=3))
    sport, cooking = topic_texts(SPORT, 100, seed=4), topic_texts(COOKING, 100, seed=5)
    pool = [text for pair in zip(sport, cooking) for text in pair]  # interleaved: the order says nothing
    summary = select(_config(topic_model, _jsonl(tmp_path / "pool.jsonl", pool), like, tmp_path / "picked.jsonl", top=100))
    picked = [json.loads(line) for line in (tmp_path / "picked.jsonl").read_text().splitlines()]
    assert summary["selected"] == len(picked) == 100 and summary["pool_documents"] == 200
    assert sum(p["text"] in set(sport) for p in picked) >= 90
    scores = [p["score"] for p in picked]
    assert scores == sorted(scores, reverse=True) and summary["highest_score"] == pytest.approx(scores[0], abs=1e-6)


def test_select_never_picks_a_copy_of_a_task_text(topic_model, tmp_path):
    from mlm_adapt.training.curation import select

    task = topic_texts(SPORT, 20, seed=6, length=30)
    copies = [t.upper() for t in task[:5]] + ["  ".join(t.split()) for t in task[5:10]]
    def one_word_changed(text: str) -> str:
        words = text.split()
        words[10] = "penalty" if words[10] != "penalty" else "goal"
        return " ".join(words)

    near = [one_word_changed(t) for t in task[10:15]]
    pool = copies + near + topic_texts(SPORT, 40, seed=7, length=30) + topic_texts(COOKING, 40, seed=8, length=30)
    summary = select(_config(topic_model, _jsonl(tmp_path / "pool.jsonl", pool), _jsonl(tmp_path / "task.jsonl", task),
                             tmp_path / "picked.jsonl", top=60))
    picked = {json.loads(line)["text"] for line in (tmp_path / "picked.jsonl").read_text().splitlines()}
    assert summary["excluded_duplicates"] == 15 and not picked & set(copies + near)
    # Without the copy check these, the nearest of all, would lead the list.
    from mlm_adapt.data import duplicates

    assert duplicates.CopyFinder(task).copies(copies + near).all()


def test_the_output_is_data_a_run_trains_on(topic_model, tmp_path, capsys):
    like = _jsonl(tmp_path / "task.jsonl", topic_texts(SPORT, 10, seed=9))
    pool = _jsonl(tmp_path / "pool.jsonl", topic_texts(SPORT, 40, seed=10) + topic_texts(COOKING, 40, seed=11))
    code, out, err = run_main(capsys, "select", "--model", str(topic_model), "--pool", str(pool), "--like", str(like),
                              "--top", "30", "--output", str(tmp_path / "o.jsonl"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["selected"] == 30 and report["pool_documents"] == 80 and report["excluded_duplicates"] == 0
    assert report["seconds"] > 0
    code, _, err = run_main(capsys, "train", "--model", str(topic_model), "--data", str(tmp_path / "o.jsonl"), "--max-steps", "1",
                            "--batch-size", "4", "--chunk-size", "32", "--eval-size", "2", "--precision", "fp32",
                            "--output", str(tmp_path / "run"))
    assert code == 0, err


def _long_pool(path: Path, count: int, marked: set[int]) -> Path:
    """``count`` documents of ~35 KB; those in ``marked`` open with the task's topic."""
    rng = random.Random(12)
    filler = " ".join(rng.choice(COOKING + GLUE) for _ in range(6_000))
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            words = SPORT if i in marked else COOKING
            # The opening fills the encoder's 128 tokens; the filler, the same in every document, lies past them.
            fh.write(json.dumps({"text": f"{topic_texts(words, 1, seed=i, length=130)[0]} {filler}"}) + "\n")
    return path


def test_a_pool_bigger_than_the_memory_budget_is_read_in_bounded_memory(topic_model, tmp_path):
    """A ~19 MB pool streamed through ``select`` with a memory budget of 8 MB for the Python
    heap: the pool is read, screened, embedded and ranked a batch at a time, only the top
    candidates kept; and the best documents are found."""
    from mlm_adapt.training.curation import select

    like = _jsonl(tmp_path / "task.jsonl", topic_texts(SPORT, 20, seed=13, length=130))
    marked = set(random.Random(3).sample(range(600), 20))
    pool = _long_pool(tmp_path / "pool.jsonl", 600, marked)
    budget = 8 * 2**20
    assert pool.stat().st_size > 2 * budget
    warm = _jsonl(tmp_path / "warm.jsonl", topic_texts(COOKING, 5, seed=1))
    select(_config(topic_model, warm, like, tmp_path / "warm-picked.jsonl", top=1, streaming=True))  # imports: not the pool's
    tracemalloc.start()
    try:
        summary = select(_config(topic_model, pool, like, tmp_path / "picked.jsonl", top=20, streaming=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["pool_documents"] == 600 and peak < budget, peak
    picked = [json.loads(line)["text"] for line in (tmp_path / "picked.jsonl").read_text().splitlines()]
    assert sum(text.split()[1] in SPORT for text in picked) >= 18  # the marked documents (their first topic word)


@pytest.mark.parametrize("case, match", [
    ("top-zero", "--top must be a positive whole number"),
    ("top-over-pool", "--top 50 is more than the 20 documents of --pool"),
    ("empty-pool", "the pool is empty"),
    ("like-column", "--like: --like-text-column 'text' not found; the data has columns: sentence"),
])
def test_bad_selections_are_one_error_line(case, match, topic_model, tmp_path, capsys):
    pool = _jsonl(tmp_path / "pool.jsonl", topic_texts(SPORT, 20, seed=14))
    like = _jsonl(tmp_path / "task.jsonl", topic_texts(SPORT, 5, seed=15))
    top = {"top-zero": "0", "top-over-pool": "50"}.get(case, "5")
    if case == "empty-pool":
        pool = _jsonl(tmp_path / "empty.jsonl", ["", "  "])
    if case == "like-column":
        like = tmp_path / "sentences.jsonl"
        like.write_text(json.dumps({"sentence": "a goal."}) + "\n", encoding="utf-8")
    code, _, err = run_main(capsys, "select", "--model", str(topic_model), "--pool", str(pool), "--like", str(like),
                            "--top", top, "--output", str(tmp_path / "o.jsonl"))
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: ") and match in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1  # after the progress bar, if the pool was read
    assert not (tmp_path / "o.jsonl").exists()


def test_a_streamed_pool_smaller_than_top_is_refused_after_reading_it(topic_model, tmp_path):
    from mlm_adapt.training.curation import select

    pool = _jsonl(tmp_path / "pool.jsonl", topic_texts(SPORT, 8, seed=16))
    like = _jsonl(tmp_path / "task.jsonl", topic_texts(SPORT, 3, seed=17))
    with pytest.raises(MlmAdaptError, match="--top 10 is more than the 8 documents"):
        select(_config(topic_model, pool, like, tmp_path / "o.jsonl", top=10, streaming=True))


def test_leaders_keep_the_best_and_break_ties_by_pool_order():
    from mlm_adapt.training.curation import Leaders

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(np.float32)  # many ties
    leaders = Leaders(25)
    for start in range(0, 300, 32):
        rows = np.arange(start, min(start + 32, 300))
        leaders.offer(scores[rows], rows, [f"t{i}" for i in rows])
    expected = sorted(range(300), key=lambda i: (-scores[i], i))[:25]
    assert leaders.texts == [f"t{i}" for i in expected] and leaders.order.tolist() == expected
