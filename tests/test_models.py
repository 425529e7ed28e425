"""Loading rules and the sparse masked-LM loss."""

from __future__ import annotations

import shutil

import pytest
import torch

from mlm_adapt.config import ModelConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.modeling.loading import load_model, load_tokenizer, max_chunk_size
from mlm_adapt.modeling.objective import masked_lm_nll, supports_sparse_prediction


def _random_batch(vocab_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (4, 24), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 18:] = 0  # a padded row
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[attention == 0] = -100
    return ids, attention, labels


def _modernbert_dir(models_root, bert_dir):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    folder = models_root / "tiny-modernbert"
    if not folder.exists():
        tok = load_tokenizer(ModelConfig(str(bert_dir)))
        config = ModernBertConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=128, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id, global_attn_every_n_layers=1, attn_implementation="eager",
        )
        torch.manual_seed(0)
        ModernBertForMaskedLM(config).save_pretrained(folder)
        tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "modernbert"])
def test_sparse_loss_equals_the_full_forward(family, request, models_root, bert_dir):
    folder = _modernbert_dir(models_root, bert_dir) if family == "modernbert" else request.getfixturevalue(f"{family}_dir")
    model = load_model(ModelConfig(str(folder))).eval()
    assert supports_sparse_prediction(model)
    ids, attention, labels = _random_batch(model.config.vocab_size)
    with torch.no_grad():
        sparse, n_sparse = masked_lm_nll(model, ids, attention, labels)
        full, n_full = masked_lm_nll(model, ids, attention, labels, sparse=False)
        reference = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    assert n_sparse == n_full == int((labels != -100).sum())
    assert sparse.item() == pytest.approx(full.item(), rel=1e-5)
    assert (sparse / n_sparse).item() == pytest.approx(reference.item(), rel=1e-5)


def test_sparse_gradients_match_the_full_forward(bert_dir):
    model = load_model(ModelConfig(str(bert_dir)))
    model.config.hidden_dropout_prob = 0.0
    model.eval()  # no dropout, so both passes see the same network
    ids, attention, labels = _random_batch(model.config.vocab_size, seed=1)
    grads = []
    for sparse in (True, False):
        model.zero_grad()
        nll, _ = masked_lm_nll(model, ids, attention, labels, sparse=sparse)
        nll.backward()
        grads.append(model.bert.embeddings.word_embeddings.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_tokenizer_without_mask_token_is_refused(tmp_path, bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    tok.mask_token = None
    tok.save_pretrained(tmp_path)
    shutil.copy(bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(MlmAdaptError, match="no mask token.*causal"):
        load_tokenizer(ModelConfig(str(tmp_path)))


def test_causal_lm_has_no_masked_lm_form(tmp_path, roberta_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    with pytest.raises(MlmAdaptError, match="gpt2 model has no masked-LM form"):
        load_model(ModelConfig(str(tmp_path)))


def test_encoder_without_head_loads_with_a_warning(tmp_path, bert_dir, mlm_log):
    from transformers import BertModel

    encoder = load_model(ModelConfig(str(bert_dir))).bert
    BertModel(encoder.config).save_pretrained(tmp_path)
    shutil.copy(bert_dir / "tokenizer.json", tmp_path)
    shutil.copy(bert_dir / "tokenizer_config.json", tmp_path)
    model = load_model(ModelConfig(str(tmp_path)))
    assert "no masked-LM head" in mlm_log.text
    assert model.cls.predictions.transform.dense.weight.shape == (32, 32)


def test_broken_config_is_named(tmp_path, bert_dir):
    shutil.copytree(bert_dir, tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(MlmAdaptError, match="broken config.json"):
        load_model(ModelConfig(str(tmp_path / "m")))


def test_folder_without_config(tmp_path):
    with pytest.raises(MlmAdaptError, match="no config.json"):
        load_model(ModelConfig(str(tmp_path)))


def test_unknown_hub_id_offline_says_so():
    with pytest.raises(MlmAdaptError, match="offline mode is on"):
        load_tokenizer(ModelConfig("someone/no-such-model-xyz"))


def test_pickle_weights_need_allow_pickle(tmp_path, bert_dir, mlm_log):
    shutil.copytree(bert_dir, tmp_path / "m")
    state = load_model(ModelConfig(str(bert_dir))).state_dict()
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(MlmAdaptError, match="--allow-pickle"):
        load_model(ModelConfig(str(tmp_path / "m")))
    model = load_model(ModelConfig(str(tmp_path / "m"), allow_pickle=True))
    assert "can execute code" in mlm_log.text
    torch.testing.assert_close(model.state_dict()["cls.predictions.bias"], state["cls.predictions.bias"])


def test_max_chunk_size_accounts_for_roberta_offset(roberta_dir, bert_dir):
    from transformers import AutoConfig, AutoTokenizer

    rob = AutoConfig.from_pretrained(roberta_dir)
    assert max_chunk_size(rob, AutoTokenizer.from_pretrained(roberta_dir)) == 128  # 130 - (pad 1 + 1)
    bert = AutoConfig.from_pretrained(bert_dir)
    assert max_chunk_size(bert, AutoTokenizer.from_pretrained(bert_dir)) == 128


@pytest.mark.parametrize("family", ["bert_dir", "roberta_dir"])
def test_with_packing_one_document_cannot_see_the_next(family, request):
    from mlm_adapt.data.chunking import frame_ids
    from mlm_adapt.modeling.objective import MaskedLMObjective

    folder = request.getfixturevalue(family)
    model, tokenizer = load_model(ModelConfig(str(folder))).eval(), load_tokenizer(ModelConfig(str(folder)))
    cls, sep, _ = frame_ids(tokenizer)
    first = tokenizer("the film was good", add_special_tokens=False)["input_ids"]
    second = tokenizer("a long dull plot", add_special_tokens=False)["input_ids"]
    # The same first document; the second differs in every token.
    ids = torch.tensor([[cls, *first, sep, *second, sep], [cls, *first, sep, *[first[0]] * len(second), sep]])
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]  # a token of the first document
    packed, plain = (MaskedLMObjective(model, separator=s)(ids, torch.ones_like(ids), labels, per_row=True)[0]
                     for s in (sep, None))
    assert packed[0].item() == pytest.approx(packed[1].item(), abs=1e-6)  # blind to the second document
    assert plain[0].item() != plain[1].item()  # without packing it reads it (tiny models: a small change)


@pytest.mark.parametrize("family", ["bert_dir", "roberta_dir"])
def test_a_packed_document_reads_the_same_wherever_it_sits(family, request):
    """Mask and positions together: a document's loss does not depend on how long the
    document packed before it is (with the mask alone its positions would shift)."""
    from mlm_adapt.data.chunking import frame_ids
    from mlm_adapt.data.packing import document_attention_mask
    from mlm_adapt.modeling.objective import MaskedLMObjective

    folder = request.getfixturevalue(family)
    model, tokenizer = load_model(ModelConfig(str(folder))).eval(), load_tokenizer(ModelConfig(str(folder)))
    cls, sep, _ = frame_ids(tokenizer)
    short, long = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("good", "the film was very good indeed"))
    middle = tokenizer("a long dull plot", add_special_tokens=False)["input_ids"]
    tail = len(long) - len(short) + 2
    ids = torch.tensor([[cls, *short, sep, *middle, sep, *[middle[0]] * tail, sep],
                        [cls, *long, sep, *middle, sep, *[middle[0]] * 2, sep]])
    labels = torch.full_like(ids, -100)
    for row, first in enumerate((short, long)):
        start = 2 + len(first)
        labels[row, start:start + len(middle)] = ids[row, start:start + len(middle)]  # the middle document
    packed = MaskedLMObjective(model, separator=sep)(ids, torch.ones_like(ids), labels, per_row=True)[0]
    assert packed[0].item() == pytest.approx(packed[1].item(), rel=1e-5)
    mask_only = masked_lm_nll(model, ids, document_attention_mask(ids, None, sep), labels, per_row=True)[0]
    assert mask_only[0].item() != pytest.approx(mask_only[1].item(), rel=1e-5)  # positions matter


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def half_saved_bert(request, bert_dir, tmp_path_factory):
    """The tiny BERT saved in half precision, as many Hub checkpoints are."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = tmp_path_factory.mktemp(f"bert-{request.param}")
    AutoModelForMaskedLM.from_pretrained(bert_dir).to(getattr(torch, request.param)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(bert_dir).save_pretrained(folder)
    assert AutoModelForMaskedLM.from_pretrained(folder).dtype == getattr(torch, request.param)  # saved as such
    return folder


def test_every_command_works_on_a_half_precision_checkpoint(half_saved_bert, data_root, tmp_path, capsys):
    import torch

    from conftest import labelled_csv, make_documents, run_main
    from mlm_adapt.modeling.loading import load_model

    assert load_model(ModelConfig(str(half_saved_bert))).dtype == torch.float32  # fp32 master weights
    data, model = str(data_root / "docs.txt"), str(half_saved_bert)
    small = ["--chunk-size", "32", "--eval-size", "16"]
    docs = make_documents(40, seed=5)
    labels = labelled_csv(tmp_path / "labels.csv", docs, ["pos" if i % 2 else "neg" for i in range(len(docs))])
    commands = [
        ["train", "--model", model, "--data", data, "--output", str(tmp_path / "auto"), "--max-steps", "2",
         "--train-size", "32", "--batch-size", "8", *small],
        ["train", "--model", model, "--data", data, "--output", str(tmp_path / "fp32"), "--max-steps", "2",
         "--train-size", "32", "--batch-size", "8", "--precision", "fp32", *small],
        ["evaluate", "--model", model, "--data", data, *small],
        ["evaluate", "--model", model, "--data", data, "--pseudo", "--max-sentences", "4", *small],
        ["fill-mask", "--model", model, "the good [MASK] loved the film."],
        ["probe", "--model", model, "--data", str(labels), "--seeds", "1"],
        ["vocab", "--model", model, "--data", data],
    ]
    for command in commands:
        code, _, err = run_main(capsys, *command)
        assert code == 0, (command[0], err[-1500:])


def _tiny_modernbert(window: int = 16):
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2, local_attention=window, global_attn_every_n_layers=3,
                              max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              cls_token_id=1, sep_token_id=2)
    return ModernBertForMaskedLM(config).eval()


def test_modernbert_keeps_its_sliding_window_in_the_loss_and_evaluation():
    # Inputs of 96 tokens, a window of 8 to each side: a 4-D mask would make every layer global.
    import torch
    import torch.nn.functional as F

    from mlm_adapt.modeling.loading import sliding_window
    from mlm_adapt.modeling.objective import MaskedLMObjective

    model = _tiny_modernbert()
    assert sliding_window(model.config) == 8
    ids = torch.randint(5, 100, (3, 96))
    attention = torch.ones_like(ids)
    attention[1, 70:] = 0  # one padded row, as an evaluation batch has
    labels = torch.full_like(ids, -100)
    labels[:, 3::7] = ids[:, 3::7]
    labels[attention == 0] = -100
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits  # the model's own forward
        expected = F.cross_entropy(logits.reshape(-1, 100), labels.reshape(-1), reduction="none").view(3, 96)
        for sparse in (True, False):
            got, count = MaskedLMObjective(model, sparse=sparse)(ids, attention, labels, per_token=True)
            assert count == int((labels != -100).sum())
            torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=1e-5)


def test_packing_is_refused_where_it_would_undo_a_sliding_window():
    from mlm_adapt.modeling.loading import check_packing

    config = _tiny_modernbert().config
    check_packing(config, 9)  # the window spans the chunk: a 4-D mask changes nothing
    with pytest.raises(MlmAdaptError, match="--packing.*sliding-window.*--chunk-size 9 or less"):
        check_packing(config, 64)


def test_one_switch_turns_every_speed_path_off_and_the_losses_and_gradients_stay(bert_no_dropout, monkeypatch):
    # MLM_ADAPT_PLAIN=1: transformers' attention, the full forward and logits, no last-layer trim,
    # no bucket padding. The same per-token losses and gradients (dropout off: deterministic).
    import numpy as np

    from mlm_adapt.modeling.objective import MaskedLMObjective, supports_sparse_prediction, trims_last_layer

    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(5, 100, (4, 24)))
    attention = torch.ones_like(ids)
    attention[1, 18:] = 0
    labels = torch.where(torch.from_numpy(rng.random((4, 24)) < 0.2) & (attention == 1), ids, torch.full_like(ids, -100))

    def run():
        model = load_model(ModelConfig(str(bert_no_dropout))).train()
        nll, count = MaskedLMObjective(model)(ids, attention, labels, per_token=True)
        nll.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return model, nll.detach(), count, grads

    fast_model, fast, count, fast_grads = run()
    assert fast_model.config._attn_implementation == "mlm_adapt_eager" and trims_last_layer(fast_model)
    monkeypatch.setenv("MLM_ADAPT_PLAIN", "1")
    plain_model, plain, plain_count, plain_grads = run()
    assert plain_model.config._attn_implementation != "mlm_adapt_eager"
    assert not trims_last_layer(plain_model) and not supports_sparse_prediction(plain_model)
    assert count == plain_count
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert set(fast_grads) == set(plain_grads)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_library_training_leaves_the_allocator_to_the_command_line(bert_dir, data_root, tmp_path, monkeypatch):
    from conftest import train_config
    from mlm_adapt import speed
    from mlm_adapt.training.loop import train

    calls = []
    monkeypatch.setattr(speed, "keep_freed_memory", lambda: calls.append(1) or True)
    train(train_config(bert_dir, data_root / "docs.txt", tmp_path / "lib", max_steps=1))
    assert calls == []  # a library call leaves its caller's process as it found it
    assert speed.tune_process("cpu") and calls == [1]
    monkeypatch.setenv("MLM_ADAPT_PLAIN", "1")
    assert not speed.tune_process("cpu") and calls == [1]
    assert not speed.tune_process("cuda")
