"""Shared fixtures: tiny random models whose tokenizers are trained here, and small corpora.

Nothing touches the network: the environment is set offline before transformers
or datasets are imported, and every model is written with ``save_pretrained`` so
the real loading code runs.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlm_adapt import TrainConfig
    from mlm_adapt.data.tokenization import TokenizedCorpus

_CACHE = Path(tempfile.mkdtemp(prefix="mlm-adapt-test-cache-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HOME=str(_CACHE / "hf"),
    MLM_ADAPT_CACHE=str(_CACHE / "mlm-adapt"),
    TOKENIZERS_PARALLELISM="false",
)
# One thread per process (these, and the processes the tests start, inherit it), with one
# pytest-xdist worker per CPU (pyproject's addopts): the tiny models gain nothing from a
# second thread, while process starts, tokenizing and Python overhead run side by side.
# The whole suite on 2 cores capped to AVX2 took 10:32 on one process with torch's two
# threads and 5:21 this way (docs/performance.md). No test depends on the thread count;
# the runs a test compares all use the same one. A thread count set by the caller stays.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI draws the same examples every run (a red run is reproducible, not a dice roll);
# locally each run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

ADJECTIVES = "good bad great terrible funny boring long short brilliant awful dull charming".split()
NOUNS = "film movie story actor plot scene director script cast ending music camera".split()
VERBS = "loved hated enjoyed watched praised ruined carried saved".split()
RARE = "unbelievably extraordinarily cinematographically overwhelmingly".split()


def make_documents(count: int, seed: int = 0) -> list[str]:
    """Review-like documents from a tiny grammar: learnable, so training lowers perplexity."""
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            adj, noun, verb, other = rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), rng.choice(NOUNS)
            extra = f" {rng.choice(RARE)}" if rng.random() < 0.2 else ""
            sentences.append(f"the {adj} {noun} {verb} the{extra} {other}.")
        docs.append(" ".join(sentences).capitalize())
    return docs


def _wordpiece_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    # A small vocabulary forces "##" continuation pieces, which whole-word masking needs.
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )


def _byte_bpe_tokenizer(texts: list[str]):
    from tokenizers import AddedToken, ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=300, min_frequency=1, special_tokens=specials)
    tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token=AddedToken("<mask>", lstrip=True), model_max_length=128,
    )


def _save(model_cls, config, tokenizer, folder: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Helpers shared by several test modules (imported with `from conftest import ...`).


def train_config(model_dir, data, output, **overrides) -> "TrainConfig":
    """A small, fast TrainConfig for the tiny models; keyword overrides for any option."""
    from mlm_adapt import DataConfig, MaskingConfig, ModelConfig, TrainConfig

    data_fields = ("text_column", "chunk_size", "train_size", "eval_size", "remainder", "streaming", "shuffle_buffer", "packing")
    data_options = {k: overrides.pop(k) for k in list(overrides) if k in data_fields}
    masking = overrides.pop("masking", MaskingConfig())
    base = dict(batch_size=16, lr=1e-3, epochs=2, precision="fp32", seed=7)
    base.update(overrides)
    return TrainConfig(
        model=ModelConfig(str(model_dir)),
        data=DataConfig(data=str(data), chunk_size=data_options.pop("chunk_size", 48), eval_size=data_options.pop("eval_size", 40),
                        train_size=data_options.pop("train_size", None), **data_options),
        masking=masking,
        output=output,
        **base,
    )


def labelled_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    """A CSV with ``text`` and ``label`` columns."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *zip(texts, labels)])
    return path


def one_word_label_files(folder: Path, count: int, doc_seed: int, label_seed: int) -> tuple[Path, Path]:
    """Two labelled CSVs of the same short texts: in the first the label is whether the text
    calls the film brilliant or awful (one word reveals it), in the second it is random.
    Short texts: a tiny random encoder's mean-pooled vector dilutes one word in a long one."""
    import random

    rng = random.Random(label_seed)
    docs = make_documents(count, seed=doc_seed)
    marked = [rng.random() < 0.5 for _ in docs]
    texts = [f"{d.split('.')[0]}. the {'brilliant' if m else 'awful'} film." for d, m in zip(docs, marked)]
    detectable = labelled_csv(folder / "sentiment.csv", texts, ["pos" if m else "neg" for m in marked])
    noise = labelled_csv(folder / "noise.csv", texts, [rng.choice(["pos", "neg"]) for _ in texts])
    return detectable, noise


class FrameTokenizer:
    """Just the ids chunking reads from a tokenizer."""

    cls_token_id, sep_token_id, pad_token_id = 1, 2, 0
    bos_token_id = eos_token_id = None


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """``mlm-adapt ARGS`` in this process: (exit status, stdout, stderr)."""
    from mlm_adapt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def synthetic_tokens(doc_lengths: list[int], seed: int = 0) -> "TokenizedCorpus":
    """Random ids and word starts for documents of ``doc_lengths`` tokens; no specials."""
    import numpy as np

    from mlm_adapt.data.tokenization import TokenizedCorpus

    rng = np.random.default_rng(seed)
    total = sum(doc_lengths)
    ids = rng.integers(10, 1000, size=total).astype(np.int32)
    starts = rng.random(total) < 0.6
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    starts[offsets[:-1][np.array(doc_lengths) > 0]] = True
    return TokenizedCorpus(ids, starts, np.zeros(total, dtype=bool), offsets)


TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="session")
def documents() -> list[str]:
    return make_documents(400)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def bert_dir(models_root, documents) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    tok = _wordpiece_tokenizer(documents)
    config = BertConfig(vocab_size=len(tok), num_hidden_layers=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id, **TINY)
    return _save(BertForMaskedLM, config, tok, models_root / "tiny-bert")


@pytest.fixture(scope="session")
def roberta_dir(models_root, documents) -> Path:
    from transformers import RobertaConfig, RobertaForMaskedLM

    tok = _byte_bpe_tokenizer(documents)
    config = RobertaConfig(
        vocab_size=len(tok), num_hidden_layers=2, max_position_embeddings=130,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, **TINY,
    )
    return _save(RobertaForMaskedLM, config, tok, models_root / "tiny-roberta")


@pytest.fixture(scope="session")
def distilbert_dir(models_root, documents) -> Path:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tok = _wordpiece_tokenizer(documents)
    config = DistilBertConfig(vocab_size=len(tok), n_layers=2, n_heads=2, dim=32, hidden_dim=64, max_position_embeddings=128,
                              pad_token_id=tok.pad_token_id)
    return _save(DistilBertForMaskedLM, config, tok, models_root / "tiny-distilbert")


@pytest.fixture(scope="session")
def slower_bert(models_root, bert_dir) -> Path:
    """A wider model (steps of ~0.1 s), so a test can kill a run between two checkpoints."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = models_root / "wider-bert"
    if not folder.exists():
        tok = AutoTokenizer.from_pretrained(bert_dir)
        config = BertConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=1024, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
        BertForMaskedLM(config).save_pretrained(folder)
        tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def bert_no_dropout(models_root, bert_dir) -> Path:
    """The tiny BERT with dropout off: runs that should agree then differ only by float sums."""
    import shutil

    folder = models_root / "tiny-bert-no-dropout"
    if not folder.exists():
        shutil.copytree(bert_dir, folder)
        config = json.loads((folder / "config.json").read_text())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, documents) -> Path:
    """The same documents as .txt, nested .jsonl, .csv and a folder of .txt files."""
    import csv

    root = tmp_path_factory.mktemp("data")
    (root / "docs.txt").write_text("\n".join(documents) + "\n", encoding="utf-8")
    with (root / "nested.jsonl").open("w", encoding="utf-8") as fh:
        for i, doc in enumerate(documents):
            half = len(doc) // 2
            fh.write(json.dumps({"id": i, "answers": {"text": [doc[:half], doc[half:]], "score": [1, 2]}}) + "\n")
    with (root / "reviews.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "review"])
        writer.writerows([[i % 2, doc] for i, doc in enumerate(documents)])
    folder = root / "folder"
    folder.mkdir()
    for i, doc in enumerate(documents[:120]):
        (folder / f"{i:04d}.txt").write_text(doc.replace(". ", ".\n"), encoding="utf-8")
    return root


@pytest.fixture
def mlm_log(caplog):
    """caplog wired to the "mlm_adapt" logger, which the CLI stops from propagating."""
    import logging

    logger = logging.getLogger("mlm_adapt")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="mlm_adapt")
    yield caplog
    logger.removeHandler(caplog.handler)


def free_port() -> int:
    """A TCP port nothing listens on now (for a torchrun rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: list[str], timeout: float, **kwargs):
    """``subprocess.run`` in a session of its own, whose every process is killed on a
    timeout: a hung multi-process launch must not leave ranks behind (they hold ports)."""
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s (every process killed): {err[-2000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
