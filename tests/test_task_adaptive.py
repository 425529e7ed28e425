"""Task-adaptive pretraining (``train --tapt``): the held-back draw, the corpus a run trains
on, and that no held-back row's text is ever trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import labelled_csv, make_documents, run_main, train_config
from mlm_adapt.data import task_adaptive
from mlm_adapt.data.duplicates import normalised
from mlm_adapt.data.tokenization import TextEncoder

words = st.text(alphabet="abcdefgh ", min_size=1, max_size=12)


@given(texts=st.lists(words, min_size=1, max_size=60), share=st.floats(0.05, 0.95), seed=st.integers(0, 50))
def test_copies_of_a_text_are_held_back_together_and_the_draw_is_seeded(texts, share, seed):
    variants = texts + [t.upper() + "  " for t in texts]  # the same texts, recased and respaced
    held = task_adaptive.held_back(variants, share, seed)
    assert (held[: len(texts)] == held[len(texts):]).all()
    assert (held == task_adaptive.held_back(variants, share, seed)).all()  # seeded, whatever runs it
    assert (task_adaptive.held_back(variants[::-1], share, seed) == held[::-1]).all()  # a row's fate is its own
    assert not task_adaptive.held_back(texts, 0.0, seed).any() and task_adaptive.held_back(texts, 1.0, seed).all()


def test_the_held_back_share_is_the_share_asked_for():
    texts = [f"review number {i}" for i in range(4000)]
    for share in (0.1, 0.3, 0.5):
        assert task_adaptive.held_back(texts, share, seed=3).mean() == pytest.approx(share, abs=0.025)
    assert (task_adaptive.held_back(texts, 0.3, 3) != task_adaptive.held_back(texts, 0.3, 4)).any()


@settings(max_examples=40)
@given(corpus=st.lists(st.sampled_from(["a b", "c d", "", "e f g", "A  B", "h"]), max_size=20),
       task=st.lists(st.sampled_from(["a b", "c d", "x y", "z", ""]), min_size=1, max_size=10),
       share=st.floats(0.0, 1.0), alone=st.booleans())
def test_the_corpus_lists_its_documents_in_the_order_its_tokens_hold_them(corpus, task, share, alone):
    """``documents`` (what a probe reads as trained on) and ``restrict`` (what is tokenized) agree, and
    hold no held-back text."""
    from mlm_adapt.data.tokenization import concat_tokens

    vocab = {w: i + 10 for i, w in enumerate("abcdefghxyz")}

    def encode(texts):  # one id per letter: a stand-in tokenizer that skips blank texts, as the real one
        from conftest import synthetic_tokens

        texts = [t for t in texts if t.strip()]
        tokens = synthetic_tokens([len(t.split()) for t in texts])
        ids = np.array([vocab[w.lower()] for t in texts for w in t.split()], dtype=np.int32)
        return type(tokens)(ids, tokens.word_starts, tokens.special, tokens.offsets)

    draw = task_adaptive.TaskTexts.draw(task, share, seed=1, alone=alone)
    tokens = task_adaptive.restrict(encode(corpus), corpus, draw, encode)
    listed = list(task_adaptive.documents(corpus, draw))
    assert concat_tokens([encode(listed)]).ids.tolist() == tokens.ids.tolist()
    assert np.diff(tokens.offsets).tolist() == [len(t.split()) for t in listed]
    assert not {normalised(t) for t in listed} & draw.held_keys()


def _held_back_ids(tokenizer, texts, share, seed):
    draw = task_adaptive.TaskTexts.draw(texts, share, seed, alone=False)
    encoder = TextEncoder.from_tokenizer(tokenizer)
    return draw, [encoder.encode([t]).ids.tolist() for t in np.array(texts)[draw.held]]


@pytest.mark.parametrize("alone", [True, False])
def test_a_tapt_run_trains_on_no_held_back_text_and_its_probe_tests_only_them(alone, bert_dir, data_root, tmp_path,
                                                                               documents, monkeypatch):
    from mlm_adapt.data import splits
    from mlm_adapt.training.loop import train

    # 120 labelled texts: 60 of them also lines of docs.txt (the domain corpus), 60 new.
    texts = documents[:60] + make_documents(60, seed=41)
    task = labelled_csv(tmp_path / "task.csv", texts, ["pos" if i % 2 else "neg" for i in range(len(texts))])
    corpus = task if alone else data_root / "docs.txt"
    config = train_config(bert_dir, corpus, tmp_path / "run", max_steps=2, task_data=str(task), tapt=True,
                          text_column="text" if alone else "text", eval_size=10)
    assert config.tapt_alone() is alone
    captured = []
    real = splits.split_and_chunk
    monkeypatch.setattr(splits, "split_and_chunk", lambda tokens, *a, **k: captured.append(tokens) or real(tokens, *a, **k))
    metrics = train(config)

    from transformers import AutoTokenizer

    draw, held_ids = _held_back_ids(AutoTokenizer.from_pretrained(bert_dir), texts, config.task_test_share, config.seed)
    tokens = captured[0]
    trained = {tuple(tokens.ids[a:b].tolist()) for a, b in zip(tokens.offsets[:-1], tokens.offsets[1:])}
    assert 20 < len(held_ids) < 60 and not trained & {tuple(ids) for ids in held_ids}
    expected = 120 - int(draw.held.sum()) if alone else 400 - int(draw.held[:60].sum()) + 120 - int(draw.held.sum())
    assert tokens.num_documents == expected  # the task's other texts are in, added once
    probe = metrics["task_probe"]
    assert probe["leakage"]["tested_rows"] == probe["rows"] == int(draw.held.sum())  # the held-back rows, all and only
    record = json.loads((tmp_path / "run" / "trained_on.json").read_text())
    assert record["corpora"][0]["task"]["share"] == config.task_test_share and record["corpora"][0]["task"]["alone"] is alone


def test_tapt_needs_task_data_and_a_corpus_in_memory(capsys, bert_dir, data_root):
    code, _, err = run_main(capsys, "train", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"), "--tapt")
    assert code == 2 and err.strip() == "error: --tapt adapts on the texts of the labelled task: give --task-data"
    code, _, err = run_main(capsys, "train", "--model", str(bert_dir), "--task-data", str(data_root / "reviews.csv"), "--tapt",
                            "--streaming", "--max-steps", "2")
    assert code == 2 and "drop --streaming" in err
    code, _, err = run_main(capsys, "train", "--model", str(bert_dir), "--task-data", str(data_root / "reviews.csv"), "--tapt",
                            "--task-test-share", "1.5")
    assert code == 2 and "--task-test-share must be a probability" in err


def test_tapt_without_data_adapts_on_the_task_alone(bert_dir, tmp_path):
    from mlm_adapt import flat_options
    from mlm_adapt.config import TrainConfig

    config = flat_options.resolve(TrainConfig, {"model": str(bert_dir), "task_data": "t.csv", "task_text_column": "sentence",
                                                "tapt": True})
    assert config.data.data == "t.csv" and config.data.text_column == "sentence" and config.tapt_alone()
    both = flat_options.resolve(TrainConfig, {"model": str(bert_dir), "data": "d.txt", "task_data": "t.csv", "tapt": True})
    assert both.data.data == "d.txt" and not both.tapt_alone()
