"""How a tokenizer fragments a domain's words, and adding those words as whole tokens.

A pretrained vocabulary shreds a new domain's words ("hyperparameter" -> 4 pieces):
masked-LM training cannot give them a representation of their own. :func:`fragmentation`
ranks the domain's words by what the fragmenting costs (occurrences x extra pieces,
weighted by how much more often the domain uses the word than general text does);
:func:`extend_vocabulary` adds chosen words to the tokenizer *model* (WordPiece: a
vocabulary word, matched by its longest-match-first rule; byte-level BPE: the
leading-space form "Ġword", looked up before merges) and gives each new embedding
row, and output bias, the mean of its old pieces' (transformers #1413).

Words are the tokenizer's own: its normalizer (lower-casing, accent stripping) and
pre-tokenizer (whitespace and punctuation, or byte-level) decide them.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from mlm_adapt.data.tokenization import SPACE_MARKER
from mlm_adapt.errors import MlmAdaptError


@dataclass(frozen=True)
class WordCost:
    word: str  # as the tokenizer's vocabulary would hold it ("film", "Ġfilm")
    count: int
    pieces: tuple[str, ...]
    ratio: float | None  # domain rate / general rate (add-one smoothed); None without general text

    @property
    def text(self) -> str:
        return self.word.removeprefix(SPACE_MARKER)

    @property
    def cost(self) -> int:
        """Tokens spent beyond one per occurrence."""
        return self.count * (len(self.pieces) - 1)

    @property
    def score(self) -> float:
        """The ranking: cost, scaled by domain-specificity when general text is given."""
        return self.cost * (self.ratio if self.ratio is not None else 1.0)


@dataclass(frozen=True)
class Usage:
    """Tokens per word and the share of word occurrences split into several pieces."""

    words: int
    tokens: int
    split_words: int

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else float("nan")

    @property
    def split_share(self) -> float:
        return self.split_words / self.words if self.words else float("nan")


@dataclass(frozen=True)
class FragmentationReport:
    ranked: list[WordCost]
    domain: Usage
    general: Usage | None = None

    def to_json(self) -> dict:
        return {
            "domain": vars(self.domain) | {"tokens_per_word": self.domain.tokens_per_word, "split_share": self.domain.split_share},
            "general": None if self.general is None else vars(self.general) | {
                "tokens_per_word": self.general.tokens_per_word, "split_share": self.general.split_share},
            "words": [{"word": w.text, "token": w.word, "count": w.count, "pieces": list(w.pieces),
                       "cost": w.cost, "ratio": w.ratio, "score": w.score} for w in self.ranked],
        }


def count_words(tokenizer, texts: Iterable[str]) -> Counter:
    """Occurrences of each pre-tokenized word (normalized as the tokenizer normalizes)."""
    backend = tokenizer.backend_tokenizer
    counts: Counter = Counter()
    for text in texts:
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return counts


def pieces_of(tokenizer, word: str) -> tuple[str, ...]:
    return tuple(t.value for t in tokenizer.backend_tokenizer.model.tokenize(word))


def _usage(counts: Counter, pieces: dict[str, tuple[str, ...]]) -> Usage:
    total = sum(counts.values())
    tokens = sum(c * len(pieces[w]) for w, c in counts.items())
    split = sum(c for w, c in counts.items() if len(pieces[w]) > 1)
    return Usage(total, tokens, split)


def _is_word(word: str) -> bool:
    text = word.removeprefix(SPACE_MARKER)
    return len(text) >= 2 and text.isalpha()


def fragmentation(tokenizer, domain_texts: Iterable[str], general_texts: Iterable[str] | None = None,
                  top: int = 50) -> FragmentationReport:
    """The ``top`` domain words whose fragmenting costs most, and the totals on both texts."""
    domain = count_words(tokenizer, domain_texts)
    general = count_words(tokenizer, general_texts) if general_texts is not None else None
    words = set(domain) | set(general or ())
    pieces = {w: pieces_of(tokenizer, w) for w in words}
    domain_total = sum(domain.values())
    general_total = sum(general.values()) if general is not None else 0

    def ratio(word: str) -> float | None:
        if general is None:
            return None
        return (domain[word] / max(domain_total, 1)) / ((general[word] + 1) / (general_total + len(general)))

    ranked = [WordCost(w, c, pieces[w], ratio(w)) for w, c in domain.items() if _is_word(w) and len(pieces[w]) > 1]
    ranked.sort(key=lambda w: (-w.score, w.word))  # ties by the word: the same run, the same words
    return FragmentationReport(ranked[:top], _usage(domain, pieces), _usage(general, pieces) if general is not None else None)


def report(config) -> FragmentationReport:
    """``mlm-adapt vocab``: the fragmentation report of a ``VocabConfig``."""
    from mlm_adapt.data.corpus import read_texts
    from mlm_adapt.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    general = read_texts(config.general, config.max_documents) if config.general is not None else None
    return fragmentation(tokenizer, read_texts(config.data, config.max_documents), general, config.top)


def words_to_add(config, tokenizer, max_documents: int = 100_000) -> list[str]:
    """The words a ``TrainConfig`` adds: its --add-tokens-file, or the --add-tokens words
    :func:`fragmentation` ranks first on the first ``max_documents`` of its data (held-out
    documents included: the choice of words sees them, the training does not)."""
    from mlm_adapt.data.corpus import read_texts

    if config.add_tokens_file is not None:
        return read_words_file(config.add_tokens_file)
    ranked = fragmentation(tokenizer, read_texts(config.data, max_documents), top=config.add_tokens).ranked
    if not ranked:
        raise MlmAdaptError("--add-tokens: no word of the data is split into several tokens; there is nothing to add")
    return [w.text for w in ranked]


def read_words_file(path: Path) -> list[str]:
    """One word per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MlmAdaptError(f"--add-tokens-file {path}: cannot read the file ({exc.strerror})") from None
    words = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not words:
        raise MlmAdaptError(f"--add-tokens-file {path}: the file holds no words (one word per line)")
    return words


def vocabulary_form(tokenizer, word: str) -> str:
    """How the tokenizer model would hold ``word`` as one token: normalized, and with the
    leading-space marker for a byte-level BPE."""
    backend = tokenizer.backend_tokenizer
    text = backend.normalizer.normalize_str(word) if backend.normalizer is not None else word
    parts = backend.pre_tokenizer.pre_tokenize_str(" " + text.strip())
    if len(parts) != 1:
        raise MlmAdaptError(f"cannot add {word!r} as one token: the tokenizer splits it into words {[p for p, _ in parts]}")
    return parts[0][0]


@dataclass(frozen=True)
class AddedWord:
    token: str  # the vocabulary entry ("film", "Ġfilm")
    id: int
    pieces: tuple[str, ...]  # how the tokenizer split it before


def extend_vocabulary(model, tokenizer, words: list[str]):
    """``tokenizer`` with ``words`` as whole tokens and ``model`` grown to match (in place);
    each new embedding row, output row where untied, and output bias the mean of the
    word's old pieces'. Returns (model, tokenizer, added words)."""
    forms = [vocabulary_form(tokenizer, w) for w in words]
    vocab = tokenizer.get_vocab()
    for word, form in zip(words, forms):
        if form in vocab:
            raise MlmAdaptError(f"cannot add {word!r}: it is already in the vocabulary (as {form!r})")
    if len(set(forms)) != len(forms):
        twice = sorted({w for w, f in zip(words, forms) if forms.count(f) > 1})
        raise MlmAdaptError(f"words to add are listed twice (after the tokenizer's normalization): {', '.join(twice)}")
    old = {form: pieces_of(tokenizer, form) for form in forms}
    extended = _tokenizer_with(tokenizer, forms)
    ids = extended.convert_tokens_to_ids(forms)
    _grow_embeddings(model, [tokenizer.convert_tokens_to_ids(list(old[f])) for f in forms], ids, len(extended))
    return model, extended, [AddedWord(f, i, old[f]) for f, i in zip(forms, ids)]


def _tokenizer_with(tokenizer, forms: list[str]):
    """A reloaded copy of ``tokenizer`` whose model holds ``forms`` as vocabulary entries."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        path = Path(folder) / "tokenizer.json"
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
        if model["type"] not in ("WordPiece", "BPE"):
            raise MlmAdaptError(f"adding words is supported for WordPiece and BPE tokenizers, not {model['type']}")
        taken = list(model["vocab"].values()) + [t["id"] for t in spec.get("added_tokens", [])]
        for offset, form in enumerate(forms, start=max(taken) + 1):
            model["vocab"][form] = offset
        if model["type"] == "BPE":
            # A word found whole in the vocabulary is one token, whatever the merges would
            # build (tokenizers' ignore_merges): no chain of intermediate merges to add.
            model["ignore_merges"] = True
        path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        for stale in ("vocab.txt", "vocab.json", "merges.txt"):  # tokenizer.json is the one source
            (Path(folder) / stale).unlink(missing_ok=True)
        return AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def _grow_embeddings(model, old_ids: list[list[int]], new_ids: list[int], size: int) -> None:
    model.resize_token_embeddings(max(size, model.get_input_embeddings().num_embeddings), mean_resizing=False)
    inputs = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    bias = getattr(output, "bias", None)
    for rows, new in zip(old_ids, new_ids):
        rows = torch.tensor(rows)
        inputs[new] = inputs[rows].mean(dim=0)
        if output is not None and output.weight is not inputs:  # untied head: its rows too
            output.weight[new] = output.weight[rows].mean(dim=0)
        if bias is not None:
            bias[new] = bias[rows].mean()


def bits_per_byte(nll_sum: float, masked_bytes: int) -> float:
    """Masked-token NLL in bits per byte of the masked text: comparable across tokenizations
    of the same text, where a perplexity per token is not."""
    return nll_sum / math.log(2) / masked_bytes if masked_bytes > 0 else float("nan")
