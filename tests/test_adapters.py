"""LoRA (--lora-rank): what trains, what is saved, and that the rest of a run composes with it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import labelled_csv, run_main, train_config
from mlm_adapt import EvalConfig, ModelConfig, evaluate
from mlm_adapt.config import LoraSettings
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.modeling import adapters
from mlm_adapt.modeling.loading import load_model
from mlm_adapt.modeling.objective import MaskedLMObjective
from mlm_adapt.training.loop import train


def _lora_run(bert_dir, data_root, tmp_path, name="lora", **overrides):
    options = dict(max_steps=6, lora_rank=4, lr=5e-3)
    options.update(overrides)
    config = train_config(bert_dir, data_root / "docs.txt", tmp_path / name, **options)
    return config, train(config)


@pytest.fixture(scope="module")
def lora_run(bert_dir, data_root, tmp_path_factory):
    return _lora_run(bert_dir, data_root, tmp_path_factory.mktemp("lora"))


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(5, 100, (4, 24)))
    labels = torch.where(torch.from_numpy(rng.random((4, 24)) < 0.3), ids, torch.full_like(ids, -100))
    return ids, torch.ones_like(ids), labels


def test_a_lora_run_saves_a_plain_model_of_the_bases_size_and_its_adapter(lora_run, bert_dir):
    config, metrics = lora_run
    base = load_file(bert_dir / "model.safetensors")
    saved = load_file(config.output / "model.safetensors")
    assert set(saved) == set(base)  # plain names: no lora_A / base_layer
    assert metrics["total_parameters"] == sum(p.numel() for p in load_model(ModelConfig(str(bert_dir))).parameters())
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"] / 4
    assert metrics["lora"]["rank"] == 4 and metrics["lora"]["alpha"] == 8.0
    assert set(metrics["lora"]["targets"]) == {"query", "key", "value", "dense"}
    for page in ("README.md", "report.html"):  # the card and the report say it was a LoRA run, with rank and targets
        assert "LoRA adapters of rank 4 (alpha 8) on 12 linear layers (dense, key, query, value)" in (config.output / page).read_text()
    adapter = json.loads((config.output / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["peft_type"] == "LORA"
    # Only the targeted linear layers differ from the base; LayerNorms, embeddings and the head do not.
    changed = {name for name in base if not torch.equal(base[name], saved[name])}
    assert changed and all(name.startswith("bert.encoder.layer.") and name.endswith(".weight") and ".dense." in name
                           or any(f".{t}." in name for t in ("query", "key", "value")) for name in changed), changed
    assert not any("LayerNorm" in name or "embeddings" in name or name.startswith("cls.") for name in changed)


def test_the_saved_lora_model_loads_and_fills_masks_without_peft(lora_run):
    config, _ = lora_run
    # peft made unimportable: the merged checkpoint needs transformers alone.
    script = ("import sys; sys.modules['peft'] = None\n"
              "from transformers import AutoModelForMaskedLM, pipeline\n"
              f"model = AutoModelForMaskedLM.from_pretrained({str(config.output)!r})\n"
              f"print(len(pipeline('fill-mask', model={str(config.output)!r})('the great [MASK] loved the film.')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "5"


def test_the_perplexity_train_reports_is_what_evaluate_finds_in_the_saved_folder(lora_run):
    config, metrics = lora_run
    again = evaluate(EvalConfig(model=ModelConfig(str(config.output)), data=config.data, batch_size=config.batch_size,
                                precision="fp32", seed=config.seed))
    assert again.perplexity == pytest.approx(metrics["perplexity_after"], rel=1e-4)
    assert metrics["perplexity_after"] != metrics["perplexity_before"]


def test_the_adapter_folder_loads_with_peft_and_gives_the_merged_models_logits(lora_run, bert_dir):
    from peft import PeftModel

    config, _ = lora_run
    ids, attention, _ = _batch()
    with torch.no_grad():
        merged = load_model(ModelConfig(str(config.output))).eval()(input_ids=ids, attention_mask=attention).logits
        stacked = PeftModel.from_pretrained(load_model(ModelConfig(str(bert_dir))), str(config.output / "adapter")).eval()
        logits = stacked(input_ids=ids, attention_mask=attention).logits
    torch.testing.assert_close(logits, merged, atol=1e-5, rtol=1e-5)


def test_merging_keeps_the_unmerged_models_logits(bert_dir):
    torch.manual_seed(0)
    model = load_model(ModelConfig(str(bert_dir))).eval()
    adapter = adapters.Adapter(model, LoraSettings(rank=4, alpha=8.0, dropout=0.0), [])
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero (the adapter a no-op): give it weights to merge
            torch.nn.init.normal_(param, std=0.2)
    ids, attention, _ = _batch()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=attention).logits
        merged = adapter.merge()
        after = merged(input_ids=ids, attention_mask=attention).logits
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert (before - load_model(ModelConfig(str(bert_dir))).eval()(input_ids=ids, attention_mask=attention).logits).abs().max() > 1e-3
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def _one_step(model) -> dict[str, torch.Tensor]:
    """Every tensor after one AdamW step on a random batch, from a copy of every tensor before."""
    from mlm_adapt.training.optimizer_step import param_groups

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-2)
    for seed in range(2):  # two steps: B moves in the first, A (whose gradient needs B != 0) in the second
        nll, _ = MaskedLMObjective(model.train())(*_batch(seed))
        nll.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {name: bool(not torch.equal(before[name], p.detach())) for name, p in model.named_parameters()}


@pytest.mark.parametrize("train_head", [False, True], ids=["frozen-head", "train-head"])
def test_only_the_adapters_and_the_head_if_asked_change_in_training(bert_dir, train_head):
    torch.manual_seed(0)
    model = load_model(ModelConfig(str(bert_dir)))
    adapters.Adapter(model, LoraSettings(rank=4, alpha=8.0, dropout=0.0, train_head=train_head), [])
    changed = _one_step(model)
    lora = {n for n in changed if "lora_" in n}
    head = {n for n in changed if n.startswith("cls.") or "word_embeddings" in n}
    assert lora and all(changed[n] for n in lora)
    assert all(changed[n] == train_head for n in head), {n: changed[n] for n in head}
    assert not any(changed[n] for n in set(changed) - lora - head)


def test_words_added_under_lora_train_their_own_rows_alone(bert_dir, data_root, tmp_path):
    config, metrics = _lora_run(bert_dir, data_root, tmp_path, add_tokens=3)
    added = [a["id"] for a in metrics["added_tokens"]]
    assert len(added) == 3 and metrics["lora"]["trainable_tokens"] == 3
    saved = load_file(config.output / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    # The rows the words got at the start (their pieces' mean): what a run that does not train them keeps.
    from mlm_adapt.evaluation import vocabulary
    from mlm_adapt.modeling.loading import load_tokenizer

    model, tokenizer = load_model(ModelConfig(str(bert_dir))), load_tokenizer(ModelConfig(str(bert_dir)))
    model, _, _ = vocabulary.extend_vocabulary(model, tokenizer, [a["token"] for a in metrics["added_tokens"]])
    start = model.get_input_embeddings().weight.detach()
    old = [i for i in range(start.shape[0]) if i not in added]
    torch.testing.assert_close(saved[old], start[old], atol=0, rtol=0)
    assert all(not torch.equal(saved[i], start[i]) for i in added)


def test_the_speed_paths_give_a_lora_model_the_plain_paths_losses(bert_no_dropout, monkeypatch):
    def losses():
        torch.manual_seed(0)
        model = load_model(ModelConfig(str(bert_no_dropout))).train()
        adapters.Adapter(model, LoraSettings(rank=4, alpha=8.0, dropout=0.0), [])
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.2)
        nll, _ = MaskedLMObjective(model)(*_batch(), per_token=True)
        nll.sum().backward()
        return nll.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    fast, fast_grads = losses()
    monkeypatch.setenv("MLM_ADAPT_PLAIN", "1")
    plain, plain_grads = losses()
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert set(fast_grads) == set(plain_grads) and all("lora_" in n for n in fast_grads)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_targets_pick_layers_by_name_in_every_family(bert_dir, distilbert_dir, roberta_dir):
    distilbert = load_model(ModelConfig(str(distilbert_dir)))
    assert {n.rsplit(".", 1)[-1] for n in adapters.encoder_linears(distilbert)} == {"q_lin", "k_lin", "v_lin", "out_lin",
                                                                                    "lin1", "lin2"}
    roberta = load_model(ModelConfig(str(roberta_dir)))
    assert all(n.startswith("roberta.encoder.") for n in adapters.encoder_linears(roberta))
    chosen = adapters.chosen_linears(load_model(ModelConfig(str(bert_dir))), ("query", "value"))
    assert len(chosen) == 4 and all(n.endswith((".query", ".value")) for n in chosen)  # 2 layers x 2
    with pytest.raises(MlmAdaptError, match="matches no linear layer.*named dense, key, query, value"):
        adapters.chosen_linears(load_model(ModelConfig(str(bert_dir))), ("query", "q_proj"))


def test_selection_early_stop_and_forgetting_work_under_lora(bert_dir, data_root, tmp_path):
    config, metrics = _lora_run(bert_dir, data_root, tmp_path, max_steps=8, eval_steps=2, early_stop=2,
                                general_data=str(data_root / "reviews.csv"), general_text_column="review", max_forgetting=50.0)
    assert len(metrics["history"]) >= 2 and metrics["selected_step"] in [h["step"] for h in metrics["history"]]
    again = evaluate(EvalConfig(model=ModelConfig(str(config.output)), data=config.data, batch_size=config.batch_size,
                                precision="fp32", seed=config.seed))
    assert again.perplexity == pytest.approx(metrics["perplexity_after"], rel=1e-4)  # the selected step, merged


def test_tapt_and_streaming_runs_take_lora(bert_dir, data_root, tmp_path, documents):
    task = labelled_csv(tmp_path / "task.csv", documents[:120], [str(i % 2) for i in range(120)])
    _, tapt = _lora_run(bert_dir, data_root, tmp_path, name="tapt", task_data=str(task), tapt=True, max_steps=3)
    assert tapt["lora"]["rank"] == 4 and "task_probe" in tapt
    _, streamed = _lora_run(bert_dir, data_root, tmp_path, name="stream", streaming=True, max_steps=3)
    assert streamed["steps"] == 3 and streamed["trainable_parameters"] < streamed["total_parameters"]


def test_blend_takes_a_lora_runs_merged_model(lora_run, bert_dir, tmp_path, capsys):
    config, _ = lora_run
    code, out, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(config.output), "--data",
                              str(config.data.data), "--chunk-size", "48", "--eval-size", "40", "--alphas", "0.5",
                              "--output", str(tmp_path / "blend"), "--precision", "fp32")
    assert code == 0, err
    assert (tmp_path / "blend" / "model.safetensors").exists()


@pytest.mark.parametrize("args, message", [
    (["--lora-rank", "0"], "--lora-rank must be a positive number"),
    (["--lora-rank", "-2"], "--lora-rank must be a positive number"),
    (["--lora-rank", "4", "--lora-targets", "q_proj"], "--lora-targets: q_proj matches no linear layer"),
    (["--lora-rank", "4", "--compile"], "--compile with --lora-rank is not supported"),
    (["--lora-alpha", "16"], "give --lora-rank too"),
    (["--lora-rank", "4", "--lora-dropout", "1"], "--lora-dropout must be in"),
], ids=["zero", "negative", "unknown-target", "compile", "alpha-alone", "dropout"])
def test_bad_lora_options_are_one_error_line(bert_dir, data_root, tmp_path, capsys, args, message):
    code, out, err = run_main(capsys, "train", "--model", str(bert_dir), "--data", str(data_root / "docs.txt"),
                              "--output", str(tmp_path / "o"), "--max-steps", "1", *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
