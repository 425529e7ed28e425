"""Tokenizing documents into flat arrays: the same tokens and words as the tokenizer, cached."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlm_adapt.config import DataConfig
from mlm_adapt.data.chunking import chunk_documents
from mlm_adapt.data.corpus import load_corpus
from mlm_adapt.data.tokenization import TextEncoder, tokenize_corpus


def test_tokenized_stream_matches_plain_tokenizer(bert_dir, data_root):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    corpus = load_corpus(DataConfig(data=str(data_root / "docs.txt")))
    tokens = tokenize_corpus(corpus, tok)
    docs = [d for batch in corpus.batches() for d in batch]
    per_doc = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    assert tokens.num_documents == len(docs)
    assert tokens.ids.tolist() == sum(per_doc, [])


def test_padding_and_truncation_in_tokenizer_json_are_ignored(bert_dir, data_root, tmp_path):
    # sentence-transformers tokenizer.json files (like the demo's all-MiniLM-L6-v2) pad and
    # truncate every text to 128 tokens; documents must still be tokenized whole.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    tok.backend_tokenizer.enable_padding(length=16, pad_id=tok.pad_token_id, pad_token=tok.pad_token)
    tok.backend_tokenizer.enable_truncation(max_length=16)
    tok.save_pretrained(tmp_path)
    padded = AutoTokenizer.from_pretrained(tmp_path)
    assert padded.backend_tokenizer.padding is not None
    corpus = load_corpus(DataConfig(data=str(data_root / "docs.txt")))
    plain = tokenize_corpus(corpus, AutoTokenizer.from_pretrained(bert_dir))
    tokens = tokenize_corpus(corpus, padded)
    assert (tokens.ids == plain.ids).all() and (tokens.offsets == plain.offsets).all()
    assert tokens.lengths().max() > 16 and not tokens.special.any()


def test_tokenization_cache_is_reused(bert_dir, data_root, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from mlm_adapt.data import tokenization

    tok = AutoTokenizer.from_pretrained(bert_dir)
    corpus = load_corpus(DataConfig(data=str(data_root / "docs.txt")))
    first = tokenize_corpus(corpus, tok, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    monkeypatch.setattr(tokenization, "_tokenize", lambda *a, **k: pytest.fail("tokenized again"))
    second = tokenize_corpus(corpus, tok, cache_dir=tmp_path)
    assert (first.ids == second.ids).all() and (first.offsets == second.offsets).all()


# Literal special tokens in a corpus, and a character neither vocabulary knows ("ж" is [UNK]
# for the WordPiece fixture; byte-level BPE has no unknown, so its literal <unk> stands in).
SPECIAL_TEXT = {
    "bert_dir": "the film [MASK] was [SEP] good ж [UNK] [CLS] [PAD] plot.",
    "roberta_dir": "the film <mask> was </s> good <unk> <s> <pad> plot.",
}


@pytest.mark.parametrize("model", sorted(SPECIAL_TEXT))
def test_every_special_id_in_the_text_is_flagged_and_never_masked(request, model):
    from transformers import AutoTokenizer

    from mlm_adapt.data.masking import IGNORE_INDEX, MaskingVocab, mask_batch

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(model))
    tokens = TextEncoder.from_tokenizer(tok).encode([SPECIAL_TEXT[model]] * 40)
    is_special = np.isin(tokens.ids, tok.all_special_ids)
    assert is_special.sum() >= 5 * 40  # the text really holds them (the fixture could drift)
    assert (tokens.special == is_special).all()
    chunks = chunk_documents(tokens, np.arange(tokens.num_documents), 48, tok, "pad")
    for scheme in ("token", "whole-word"):
        _, labels = mask_batch(chunks.input_ids, chunks.word_ids, scheme=scheme, prob=0.95,
                               vocab=MaskingVocab.from_tokenizer(tok), rng=np.random.default_rng(0))
        chosen = labels != IGNORE_INDEX
        assert chosen.sum() > 100 and not np.isin(labels[chosen], tok.all_special_ids).any()


def test_cached_tokens_are_invalidated_when_the_file_changes(bert_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    data = tmp_path / "docs.txt"
    data.write_text("the good film.\nthe bad plot.\n", encoding="utf-8")
    config = DataConfig(data=str(data))
    first = tokenize_corpus(load_corpus(config), tok, cache_dir=tmp_path / "cache")
    data.write_text("the good film.\nthe bad plot.\nthe dull cast.\n", encoding="utf-8")
    second = tokenize_corpus(load_corpus(config), tok, cache_dir=tmp_path / "cache")
    assert (first.num_documents, second.num_documents) == (2, 3)
    data.write_text("the good film.\nthe bad cast.\nthe dull plot.\n", encoding="utf-8")  # same size, same line count
    third = tokenize_corpus(load_corpus(config), tok, cache_dir=tmp_path / "cache")
    assert third.ids.tolist() == tok("the good film. the bad cast. the dull plot.", add_special_tokens=False)["input_ids"]


# Text the property test draws from: words the fixture's WordPiece vocabulary splits into
# "##" pieces, punctuation (a literal "##" included), literal special tokens, a character
# neither vocabulary knows, and accents the normalizer strips.
PIECES = ["the", "film", "cinematographically", "unbelievably", "plot", ",", ".", "!", "##", "#ing", "[MASK]",
          "[SEP]", "[UNK]", "ж", "café", "naïve", "12", "3.5", "don't", "x", "  ", "\t"]
texts_strategy = st.lists(
    st.lists(st.sampled_from(PIECES), min_size=0, max_size=30).map(
        lambda words: "".join(w + (" " if i % 3 else "") for i, w in enumerate(words))),
    min_size=1, max_size=12,
)


def _word_id_encoder(encoder: TextEncoder) -> TextEncoder:
    return dataclasses.replace(encoder, continuation=None)


@pytest.fixture(scope="module")
def bert_tokenizers(bert_dir, tmp_path_factory):
    """The WordPiece fixture as saved, and with domain words added to its model vocabulary."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_adapt.evaluation.vocabulary import extend_vocabulary

    tok = AutoTokenizer.from_pretrained(bert_dir)
    _, extended, _ = extend_vocabulary(AutoModelForMaskedLM.from_pretrained(bert_dir), tok, ["cinematographically", "naive"])
    return tok, extended


@given(texts=texts_strategy, which=st.sampled_from([0, 1]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_wordpiece_word_starts_from_ids_equal_the_tokenizers_word_ids(bert_tokenizers, texts, which):
    # The fast path (ids only, "##" table) must mark exactly the word starts the
    # tokenizer's own word ids give, or whole-word masking would change.
    encoder = TextEncoder.from_tokenizer(bert_tokenizers[which])
    assert encoder.continuation is not None
    fast, reference = encoder.encode(texts), _word_id_encoder(encoder).encode(texts)
    for name in ("ids", "word_starts", "special", "offsets"):
        assert (getattr(fast, name) == getattr(reference, name)).all(), name


def test_word_starts_come_from_word_ids_where_pieces_do_not_say(roberta_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer

    from mlm_adapt.data.tokenization import continuation_table

    assert TextEncoder.from_tokenizer(AutoTokenizer.from_pretrained(roberta_dir)).continuation is None
    # WordPiece split on whitespace only: a literal "##ing" would start a word with a continuation piece.
    whitespace = Tokenizer(models.WordPiece({"[UNK]": 0, "ing": 1, "##ing": 2}, unk_token="[UNK]"))
    whitespace.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    assert continuation_table(whitespace) is None
    whitespace.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert continuation_table(whitespace).tolist() == [False, False, True]
    # An added token spelt like a piece is a word in "##ing" but a piece in "going": ids cannot tell.
    whitespace.add_tokens(["##ing"])
    assert continuation_table(whitespace) is None


@pytest.mark.parametrize("model", ["bert_dir", "roberta_dir"])
def test_worker_processes_give_the_same_arrays(request, data_root, model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(model))
    corpus = load_corpus(DataConfig(data=str(data_root / "docs.txt")))
    alone = tokenize_corpus(corpus, tok, batch_size=7)
    spread = tokenize_corpus(corpus, tok, batch_size=7, num_workers=2)
    assert alone.num_documents > 14  # several batches per worker
    for name in ("ids", "word_starts", "special", "offsets"):
        assert (getattr(alone, name) == getattr(spread, name)).all(), name


def test_workers_read_a_stream_only_a_little_ahead(bert_dir):
    from transformers import AutoTokenizer

    from mlm_adapt.data.tokenization import encode_batches

    encoder = TextEncoder.from_tokenizer(AutoTokenizer.from_pretrained(bert_dir))
    read = []

    def batches():
        for i in range(100):
            read.append(i)
            yield [f"the film number {i}."]

    stream = encode_batches(encoder, batches(), num_workers=2)
    first = next(stream)
    assert first.num_documents == 1 and len(read) <= 2 * 2 + 1
    stream.close()
