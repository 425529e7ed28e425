"""The last layer's position-wise part on the predicted rows only (last_layer)."""

from __future__ import annotations

import pytest
import torch

from mlm_adapt.config import ModelConfig
from mlm_adapt.data.chunking import frame_ids
from mlm_adapt.modeling.loading import load_model, load_tokenizer
from mlm_adapt.modeling.objective import MaskedLMObjective, masked_lm_nll, trims_last_layer
from mlm_adapt.speed import last_layer

FAMILIES = ["bert", "distilbert", "roberta"]


def _batch(vocab_size: int, seed: int = 0, rows: int = 8, length: int = 48):
    """Enough positions (384) that the predicted rows, rounded up to 128, are fewer."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (rows, length), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 30:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.2, ids, torch.full_like(ids, -100))
    labels[attention == 0] = -100
    return ids, attention, labels


def _model(family, request):
    model = load_model(ModelConfig(str(request.getfixturevalue(f"{family}_dir"))))
    return model.eval()  # no dropout: both ways must give the same numbers


def _encoder(model):
    return getattr(model, model.base_model_prefix)


@pytest.fixture
def full_layer(monkeypatch):
    """masked_lm_nll with the whole last layer, as before this module."""
    def use_full() -> None:
        monkeypatch.setattr(last_layer, "trimmable", lambda encoder: None)
    return use_full


def _assert_rows_match_the_full_layer(model, full_layer, seed: int) -> None:
    """Per-chunk losses with the trimmed last layer equal the full layer's."""
    ids, attention, labels = _batch(model.config.vocab_size, seed=seed)
    with torch.no_grad():
        tail = masked_lm_nll(model, ids, attention, labels, per_row=True)[0]
        full_layer()
        full = masked_lm_nll(model, ids, attention, labels, per_row=True)[0]
    torch.testing.assert_close(tail, full, rtol=1e-5, atol=1e-5)


def _rows_seen(linear) -> list[int]:
    """Rows (positions) ``linear`` sees, per call from now on."""
    seen: list[int] = []
    linear.register_forward_hook(lambda module, args, out: seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    return seen


def _query_and_key(model):
    """The last layer's query and key projections."""
    attention = last_layer.trimmable(_encoder(model)).attention
    attention = getattr(attention, "self", attention)  # BERT's self-attention; DistilBERT's is the attention
    return last_layer._projections(attention)[:2]


def _ffn_rows(layer) -> list[int]:
    """Rows seen by the layer's last feed-forward projection, per call."""
    return _rows_seen(layer.ffn.lin2 if hasattr(layer, "ffn") else layer.output.dense)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_feed_forward_runs_on_the_predicted_rows_only(family, request):
    model = _model(family, request)
    layer = last_layer.trimmable(_encoder(model))
    assert layer is not None
    seen = _ffn_rows(layer)
    ids, attention, labels = _batch(model.config.vocab_size)
    with torch.no_grad():
        _, count = masked_lm_nll(model, ids, attention, labels)
    assert 0 < count <= 128 < ids.numel()
    assert seen == [128]  # the predicted rows, rounded up to SPARSE_BUCKET; not 8 x 48
    assert "forward" not in vars(layer)  # the class's forward is back


@pytest.mark.parametrize("family", FAMILIES)
def test_losses_and_every_gradient_equal_the_full_layer(family, request, full_layer):
    model = _model(family, request)
    ids, attention, labels = _batch(model.config.vocab_size, seed=1)
    results = []
    for way in ("tail", "full"):
        if way == "full":
            full_layer()
        model.zero_grad()
        nll, count = masked_lm_nll(model, ids, attention, labels)
        nll.backward()
        per_row, _ = masked_lm_nll(model, ids, attention, labels, per_row=True)
        results.append((nll.item(), count, per_row.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (tail_nll, tail_count, tail_rows, tail_grads), (full_nll, full_count, full_rows, full_grads) = results
    assert tail_count == full_count
    assert tail_nll == pytest.approx(full_nll, rel=1e-5)
    torch.testing.assert_close(tail_rows, full_rows, rtol=1e-5, atol=1e-5)
    assert tail_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(tail_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_documents_keep_their_own_attention(bert_dir, full_layer):
    """--packing: the last layer's attention still sees the document masks."""
    model = load_model(ModelConfig(str(bert_dir))).eval()
    cls, sep, _ = frame_ids(load_tokenizer(ModelConfig(str(bert_dir))))
    ids, _, labels = _batch(model.config.vocab_size, seed=2)
    ids[:, 0] = cls
    ids[:, 15::16] = sep  # three documents a row
    labels[ids == sep] = -100
    labels[:, 0] = -100
    objective = MaskedLMObjective(model, separator=sep)
    with torch.no_grad():
        tail = objective(ids, torch.ones_like(ids), labels, per_row=True)[0]
        full_layer()
        full = objective(ids, torch.ones_like(ids), labels, per_row=True)[0]
        unpacked = MaskedLMObjective(model)(ids, torch.ones_like(ids), labels, per_row=True)[0]
    torch.testing.assert_close(tail, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(tail, unpacked, rtol=1e-3)  # the masks made a difference


def test_the_forward_is_restored_when_the_encoder_fails(bert_dir):
    model = load_model(ModelConfig(str(bert_dir)))
    layer = last_layer.trimmable(_encoder(model))
    with pytest.raises(RuntimeError, match="boom"):
        with last_layer.skipped(layer):
            assert layer(torch.ones(1, 2, 3)).shape == (1, 2, 3)  # the identity while skipped
            raise RuntimeError("boom")
    assert "forward" not in vars(layer)
    assert layer(torch.zeros(1, 2, model.config.hidden_size)).shape == (1, 2, model.config.hidden_size)


def test_layouts_it_does_not_know_keep_the_full_layer(bert_dir, models_root):
    from test_models import _modernbert_dir

    modernbert = load_model(ModelConfig(str(_modernbert_dir(models_root, bert_dir))))
    assert last_layer.trimmable(_encoder(modernbert)) is None  # pre-LayerNorm, with a final norm
    assert not trims_last_layer(modernbert)
    model = load_model(ModelConfig(str(bert_dir)))
    assert trims_last_layer(model)
    _encoder(model).compile()  # lazy: nothing is compiled until it is called
    assert last_layer.trimmable(_encoder(model)) is None and not trims_last_layer(model)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_sdpa_attention_as_on_a_gpu(family, request, full_layer):
    """GPUs keep transformers' SDPA attention (models._attention): the tail calls it too."""
    from transformers import AutoModelForMaskedLM

    folder = request.getfixturevalue(f"{family}_dir")
    model = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    _assert_rows_match_the_full_layer(model, full_layer, seed=3)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_chunked_feed_forward_gives_the_same_rows(family, request, full_layer):
    """chunk_size_feed_forward (a memory option) splits the feed-forward along the sequence:
    the rows' [rows, width] input has no sequence axis, so the tail must not chunk it."""
    model = _model(family, request)
    for module in model.modules():
        if hasattr(module, "chunk_size_feed_forward"):
            module.chunk_size_feed_forward = 8
    _assert_rows_match_the_full_layer(model, full_layer, seed=4)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_queries_are_the_predicted_rows_stacked_per_chunk(family, request):
    """On a CPU the last layer's query projection sees each chunk's predicted rows, padded
    to the most any chunk has (rounded up to QUERY_BUCKET); keys and values see every position."""
    model = _model(family, request)
    query, key = _query_and_key(model)
    queries, keys = _rows_seen(query), _rows_seen(key)
    ids, attention_mask, labels = _batch(model.config.vocab_size, seed=5)
    with torch.no_grad():
        masked_lm_nll(model, ids, attention_mask, labels)
    per_chunk = (labels != -100).sum(dim=1)
    depth = -(-int(per_chunk.max()) // last_layer.QUERY_BUCKET) * last_layer.QUERY_BUCKET
    assert queries[-1] == ids.shape[0] * depth < ids.numel()
    assert keys[-1] == ids.numel()


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_all_position_queries_as_on_an_accelerator(family, request, full_layer, monkeypatch):
    """Accelerators keep every query (a per-chunk count would sync the host): same rows."""
    model = _model(family, request)
    monkeypatch.setattr(last_layer, "queries_on_rows", lambda device: False)
    queries = _rows_seen(_query_and_key(model)[0])
    _assert_rows_match_the_full_layer(model, full_layer, seed=6)
    assert queries[0] == 8 * 48


def test_rows_in_any_order_give_the_same_outputs(bert_dir):
    """tail's contract: the rows' outputs in the rows' order, whatever that order is."""
    model = load_model(ModelConfig(str(bert_dir))).eval()
    encoder = _encoder(model)
    layer = last_layer.trimmable(encoder)
    ids, attention, _ = _batch(model.config.vocab_size, seed=7)
    with torch.no_grad(), last_layer.skipped(layer) as call:
        hidden = encoder(input_ids=ids, attention_mask=attention).last_hidden_state
    rows = torch.tensor([5, 100, 101, 7, 383, 0, 250, 48])
    shuffled = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        in_order = last_layer.tail(layer, hidden, rows, call)
        padded = last_layer.tail(layer, hidden, torch.cat([rows[shuffled], torch.zeros(4, dtype=torch.long)]), call, count=8)
        full = layer(hidden, attention_mask=call["attention_mask"])
        full = (full[0] if isinstance(full, tuple) else full).reshape(-1, hidden.shape[-1])[rows]
    torch.testing.assert_close(in_order, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded[:8], in_order[shuffled], rtol=1e-5, atol=1e-5)
    assert padded.shape == (12, hidden.shape[-1])


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_batch_with_nothing_masked_and_a_chunk_without_masks(family, request, full_layer):
    model = _model(family, request)
    ids, attention, labels = _batch(model.config.vocab_size, seed=8)
    labels[2] = -100  # a chunk with no query
    with torch.no_grad():
        nll, count = masked_lm_nll(model, ids, attention, torch.full_like(labels, -100))
        assert (nll.item(), count) == (0.0, 0)
        tail = masked_lm_nll(model, ids, attention, labels, per_row=True)[0]
        full_layer()
        full = masked_lm_nll(model, ids, attention, labels, per_row=True)[0]
    torch.testing.assert_close(tail, full, rtol=1e-5, atol=1e-5)
    assert tail[2] == 0
