"""The training loop through the library API, on tiny local models."""

from __future__ import annotations

import json

import pytest

from conftest import train_config
from mlm_adapt import EvalConfig, MaskingConfig, ModelConfig, evaluate, train
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.evaluation.perplexity import resampled_units


@pytest.fixture(scope="module")
def bert_run(bert_dir, data_root, tmp_path_factory):
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path_factory.mktemp("run") / "out")
    return config, train(config)


def test_training_lowers_perplexity_and_saves_a_loadable_model(bert_run):
    config, metrics = bert_run
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    for key in ("perplexity_before", "perplexity_after", "eval_loss_before", "eval_loss_after", "eval_masked_tokens",
                "train_chunks", "eval_chunks", "train_samples_per_second", "history"):
        assert key in metrics
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][-1]["eval_loss"] == metrics["eval_loss_after"]
    saved = json.loads((config.output / "metrics.json").read_text())
    assert saved["perplexity_after"] == metrics["perplexity_after"]
    assert (config.output / "model.safetensors").exists() and not list(config.output.glob("*.bin"))
    from transformers import pipeline

    predictions = pipeline("fill-mask", model=str(config.output))("the great [MASK] loved the film.")
    assert len(predictions) == 5


def test_evaluate_reproduces_perplexity_after(bert_run):
    config, metrics = bert_run
    eval_config = EvalConfig(model=ModelConfig(str(config.output)), data=config.data, batch_size=config.batch_size, precision="fp32",
                             seed=config.seed)
    first, second = evaluate(eval_config), evaluate(eval_config)
    assert first.masked_tokens == metrics["eval_masked_tokens"]
    assert first.perplexity == pytest.approx(metrics["perplexity_after"], rel=1e-5)
    assert first.perplexity == second.perplexity


def test_same_seed_same_run_and_evaluating_more_often_changes_nothing(bert_dir, data_root, tmp_path):
    a = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "a", max_steps=5))
    b = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "b", max_steps=5, eval_steps=2))
    assert a["eval_loss_after"] == b["eval_loss_after"]
    assert [e["loss"] for e in a["log_history"]] == [e["loss"] for e in b["log_history"]]
    assert [h["step"] for h in a["history"]] == [5] and [h["step"] for h in b["history"]] == [2, 4, 5]
    assert b["history"][0]["perplexity"] > b["history"][-1]["perplexity"] == b["perplexity_after"]


def test_gradient_accumulation_matches_a_big_batch(bert_no_dropout, data_root, tmp_path):
    # 2 x 8 accumulated equals 1 x 16: the loss is normalised by the step's masked-token
    # count, not averaged per micro-batch.
    big = train(train_config(bert_no_dropout, data_root / "docs.txt", tmp_path / "big", max_steps=3, batch_size=16))
    accumulated = train(train_config(bert_no_dropout, data_root / "docs.txt", tmp_path / "acc", max_steps=3, batch_size=8, grad_accum=2))
    assert accumulated["eval_loss_after"] == pytest.approx(big["eval_loss_after"], rel=1e-4)


def test_max_steps_stops_mid_epoch(bert_dir, data_root, tmp_path):
    metrics = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=3, epochs=5))
    assert metrics["steps"] == 3
    assert len(metrics["history"]) == 1 and 0 < metrics["history"][0]["epoch"] < 1


def test_whole_word_roberta_bf16(roberta_dir, data_root, tmp_path):
    config = train_config(roberta_dir, data_root / "reviews.csv", tmp_path / "o", text_column="review",
                     masking=MaskingConfig(masking="whole-word"), precision="bf16", epochs=1)
    metrics = train(config)
    assert metrics["precision"] == "bf16"
    assert metrics["sparse_prediction"] and metrics["last_layer_on_masked_rows"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]


def test_non_empty_output_is_refused_and_overwrite_keeps_foreign_files(bert_dir, data_root, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    with pytest.raises(MlmAdaptError, match="already holds files.*--overwrite"):
        train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=1))
    train(train_config(bert_dir, data_root / "docs.txt", out, max_steps=1, overwrite=True))
    assert (out / "notes.md").read_text() == "mine"
    assert (out / "model.safetensors").exists()


def test_chunk_size_above_the_model_maximum(bert_dir, data_root, tmp_path):
    with pytest.raises(MlmAdaptError, match="above the model's maximum of 128"):
        train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", chunk_size=256))


def test_chunks_trained_counts_a_partial_last_batch_once(bert_dir, data_root, tmp_path):
    # 17 chunks at batch 4: epochs of 4 full steps and one of a single chunk.
    metrics = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", train_size=17, batch_size=4, epochs=2))
    assert (metrics["train_chunks"], metrics["steps"], metrics["chunks_trained"]) == (17, 10, 34)


def test_forgetting_check_equals_evaluate_on_the_general_text(bert_dir, data_root, tmp_path):
    # The domain: the review-like documents; the "general" text: the same documents as CSV
    # rows (any second corpus works; what matters is that its numbers are evaluate's).
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=4,
                          general_data=str(data_root / "reviews.csv"), general_text_column="review")
    metrics = train(config)
    general = EvalConfig(model=ModelConfig(str(config.output)), data=config.general_data_config(),
                         batch_size=config.batch_size, precision="fp32", seed=config.seed)
    alone = evaluate(general)
    assert metrics["general_perplexity_after"] == pytest.approx(alone.perplexity, rel=1e-5)
    assert metrics["general_eval_masked_tokens"] == alone.masked_tokens
    before = evaluate(EvalConfig(model=ModelConfig(str(bert_dir)), data=config.general_data_config(),
                                 batch_size=config.batch_size, precision="fp32", seed=config.seed))
    assert metrics["general_perplexity_before"] == pytest.approx(before.perplexity, rel=1e-5)
    assert all("general_perplexity" in h for h in metrics["history"])
    low, high = metrics["general_perplexity_after_interval"]
    assert low <= metrics["general_perplexity_after"] <= high
    # The general change is paired like the domain's: same documents resampled before and after.
    low, high = metrics["general_perplexity_change_interval"]
    ratio = metrics["general_perplexity_after"] / metrics["general_perplexity_before"]
    assert low <= ratio <= high and metrics["general_change_exceeds_noise"] == (not low <= 1 <= high)
    assert metrics["general_interval_resamples"] == resampled_units(alone)
    card = (config.output / "README.md").read_text()
    assert "general text" in card and "forgetting check" in card


def test_replay_mixes_general_training_text_and_leaves_the_forgetting_check_as_it_was(bert_dir, data_root, tmp_path):
    common = dict(max_steps=3, general_data=str(data_root / "folder"), train_size=30)
    plain = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "plain", **common))
    mixed = train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "mixed", replay_ratio=0.25, **common))
    assert plain["replay_chunks"] == 0 and mixed["replay_chunks"] == 10  # 0.25 / 0.75 of 30
    assert mixed["train_chunks"] == 40
    # Replay changes what is trained on, not the held-out general set or its masks.
    assert mixed["general_perplexity_before"] == pytest.approx(plain["general_perplexity_before"], rel=1e-6)
    assert mixed["general_eval_masked_tokens"] == plain["general_eval_masked_tokens"]
    assert mixed["perplexity_after"] != plain["perplexity_after"]


def test_every_run_reports_intervals_and_whether_the_change_is_noise(bert_run):
    _, metrics = bert_run
    for when in ("before", "after"):
        low, high = metrics[f"perplexity_{when}_interval"]
        assert low <= metrics[f"perplexity_{when}"] <= high
    low, high = metrics["perplexity_change_interval"]
    assert low <= metrics["perplexity_after"] / metrics["perplexity_before"] <= high
    assert metrics["change_exceeds_noise"] == (high < 1.0 or low > 1.0)
    assert metrics["change_exceeds_noise"]  # the tiny model learns the tiny grammar
    count, unit = metrics["interval_resamples"].split()  # held-out documents, not their chunks
    assert unit == "documents" and 2 <= int(count) <= metrics["eval_documents"]


def test_a_task_probe_ends_the_run_and_equals_the_probe_command_on_the_saved_models(bert_dir, data_root, tmp_path):
    import csv

    from mlm_adapt.config import DataConfig, ProbeConfig
    from mlm_adapt.evaluation import probing

    task = tmp_path / "task.csv"
    with task.open("w", newline="", encoding="utf-8") as fh:
        # Every seventh label flipped, and every fifth text without its telling word: scores
        # below 1 that differ between models and splits.
        csv.writer(fh).writerows([("review", "label")] + [
            (f"the {'' if i % 5 == 0 else 'brilliant' if i % 2 else 'awful'} film number {i}.",
             "pos" if (i % 2) ^ (i % 7 == 0) else "neg") for i in range(60)])
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=2,
                          task_data=str(task), task_text_column="review")
    metrics = train(config)
    probe = metrics["task_probe"]
    again = probing.probe(ProbeConfig(models=(ModelConfig(str(bert_dir)), ModelConfig(str(config.output))),
                                      data=DataConfig(str(task), text_column="review"), seed=config.seed))
    for run_scores, saved_scores in zip(probe["models"], again["models"]):
        assert run_scores["accuracy"] == pytest.approx(saved_scores["accuracy"])
        assert run_scores["macro_f1"] == pytest.approx(saved_scores["macro_f1"])
    assert probe["comparison"] == again["comparison"] and probe["classes"] == ["neg", "pos"]
    assert len({a for m in probe["models"] for a in m["accuracy"]}) > 1  # not all equal: the comparison means something
    assert json.loads((config.output / "metrics.json").read_text())["task_probe"]["rows"] == 60
    page = (config.output / "report.html").read_text()
    assert "Did it help?" in page and "adapted - base" in page and "task.csv" in page
    card = (config.output / "README.md").read_text()
    assert "Did it help the task?" in card and "text-classification" in card and "type: accuracy" in card


def test_task_data_without_labels_is_refused_before_training(bert_dir, data_root, tmp_path):
    with pytest.raises(MlmAdaptError, match="text files hold no labels"):
        train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", task_data=str(data_root / "docs.txt"))


def test_a_packed_run_is_reproduced_by_evaluate_with_packing_only(bert_dir, data_root, tmp_path):
    import dataclasses

    # Short documents (a sentence a line): every chunk packs several, so packing matters.
    short = tmp_path / "sentences.txt"
    short.write_text((data_root / "docs.txt").read_text().replace(". ", ".\n"))
    config = train_config(bert_dir, short, tmp_path / "o", max_steps=3, packing=True)
    metrics = train(config)
    evaluated = EvalConfig(model=ModelConfig(str(config.output)), data=config.data, batch_size=config.batch_size,
                           precision="fp32", seed=config.seed)
    assert evaluate(evaluated).perplexity == pytest.approx(metrics["perplexity_after"], rel=1e-5)
    unpacked = dataclasses.replace(evaluated, data=dataclasses.replace(config.data, packing=False))
    # A tiny random model reads little context, so the numbers differ only slightly, but they
    # differ: the flag reaches evaluation (test_models shows what it blocks).
    assert evaluate(unpacked).perplexity != metrics["perplexity_after"]


def test_the_model_is_saved_before_the_task_probe_runs(bert_dir, data_root, tmp_path, monkeypatch):
    # A probe that fails (a GPU quirk, a bad label file found late) must not lose the training.
    from mlm_adapt.evaluation import probing

    def failing(*args, **kwargs):
        assert (tmp_path / "o" / "model.safetensors").is_file() and (tmp_path / "o" / "metrics.json").is_file()
        raise RuntimeError("the probe failed")

    monkeypatch.setattr(probing, "probe", failing)
    with pytest.raises(RuntimeError, match="the probe failed"):
        train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=2,
                           task_data=str(data_root / "reviews.csv"), task_text_column="review"))
    assert "task_probe" not in json.loads((tmp_path / "o" / "metrics.json").read_text())


def test_remainder_pad_trains_and_evaluates_the_last_short_chunk(bert_dir, data_root, tmp_path):
    # The effect, not the recorded option: pad keeps each side's last, short chunk (padded).
    from mlm_adapt.modeling.preparation import prepare

    runs = {}
    for remainder in ("drop", "pad"):
        config = train_config(bert_dir, data_root / "docs.txt", tmp_path / remainder, max_steps=1, eval_size=10_000,
                              remainder=remainder)
        runs[remainder] = (train(config), prepare(config))
    (dropped, _), (padded, prepared) = runs["drop"], runs["pad"]
    assert padded["train_chunks"] == dropped["train_chunks"] + 1
    assert padded["eval_chunks"] == dropped["eval_chunks"] + 1
    assert padded["eval_masked_tokens"] > dropped["eval_masked_tokens"]
    assert (prepared.data.train.chunks.attention_mask == 0).any() and (prepared.eval_set.attention_mask == 0).any()


def test_the_task_probe_leaves_out_texts_the_run_trained_on(bert_dir, data_root, tmp_path, documents):
    from conftest import labelled_csv, make_documents
    from mlm_adapt.modeling.preparation import prepare

    # 80 of the labelled texts are documents of --data: those on its training side were trained on;
    # those the run held out for evaluation were not, and stay in the probe.
    texts = documents[:80] + make_documents(60, seed=21)
    task = labelled_csv(tmp_path / "task.csv", texts, ["a" if i % 2 else "b" for i in range(len(texts))])
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=2, task_data=str(task))
    held_out = set(prepare(config).data.held_out.tolist())
    trained = sum(i not in held_out for i in range(80))  # docs.txt has no empty line: line i is document i
    assert 0 < 80 - trained  # some labelled texts were held out: the test tells the two sides apart
    metrics = train(config)
    assert metrics["task_probe"]["leakage"] == {"seen_rows": trained, "unseen_rows": 140 - trained, "tested_rows": 140 - trained,
                                                "probed": "unseen"}
    assert metrics["task_probe"]["rows"] == 140 - trained
    assert f"{trained} labelled rows whose text the adaptation trained on were left out" in (tmp_path / "o" / "README.md").read_text()


def test_a_streamed_run_leaves_out_only_the_texts_it_trained_on(bert_dir, data_root, tmp_path, documents):
    from conftest import labelled_csv, make_documents
    from mlm_adapt.data import chunk_stream
    from mlm_adapt.modeling.preparation import prepare

    # A stream holds documents out by a hash of (seed, row) up to the row that filled --eval-size;
    # those rows were never trained on and stay in the probe, as in memory.
    texts = documents[:80] + make_documents(60, seed=21)
    task = labelled_csv(tmp_path / "task.csv", texts, ["a" if i % 2 else "b" for i in range(len(texts))])
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / "o", max_steps=2, task_data=str(task), streaming=True,
                          eval_size=20)
    rows = prepare(config).data.held_out_rows
    assert rows is not None and set(rows.tolist()) <= set(range(len(documents)))
    assert (chunk_stream.held_out(config.seed, rows)).all()  # the hash's draws, nothing else
    held = set(rows.tolist())
    trained = sum(i not in held for i in range(80))
    assert 0 < 80 - trained < 80
    metrics = train(config)
    assert metrics["task_probe"]["leakage"] == {"seen_rows": trained, "unseen_rows": 140 - trained, "tested_rows": 140 - trained,
                                                "probed": "unseen"}
