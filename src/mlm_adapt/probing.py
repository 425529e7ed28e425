"""Did adaptation help a task? A frozen-encoder probe on labelled text.

Each model embeds every text once (mean of its last hidden states over real tokens);
for each seed a stratified train/test split is drawn and a multinomial logistic
regression (L2, full-batch L-BFGS on standardised features) is fitted on the training
part and scored on the test part. Two models are compared on the same splits, so their
per-seed differences are paired. Gururangan et al. 2020 report standard deviations of
several points across seeds: one split says little, hence ``seeds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.seeding import Salt, generator

MIN_PER_CLASS = 5  # rows a class needs: a few to train on and at least one to test on


@dataclass(frozen=True)
class ProbeScores:
    model: str
    accuracy: list[float]  # one per seed
    macro_f1: list[float]

    def summary(self) -> dict:
        return {"model": self.model, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "accuracy_mean": float(np.mean(self.accuracy)), "accuracy_std": float(np.std(self.accuracy)),
                "macro_f1_mean": float(np.mean(self.macro_f1)), "macro_f1_std": float(np.std(self.macro_f1))}


def encode_labels(values: list) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names; refuses what cannot be probed."""
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        missing = sum(v is None or (isinstance(v, float) and np.isnan(v)) for v in values)
        raise MlmAdaptError(f"--label-column: {missing} of {len(values)} rows have no label; drop or fill them")
    names = sorted({str(v) for v in values})
    if len(names) < 2:
        raise MlmAdaptError(f"--label-column: every row has the label {names[0]!r}; a probe needs two classes or more")
    labels = np.array([names.index(str(v)) for v in values])
    counts = np.bincount(labels, minlength=len(names))
    few = [f"{names[c]} ({counts[c]})" for c in range(len(names)) if counts[c] < MIN_PER_CLASS]
    if few:
        raise MlmAdaptError(f"--label-column: too few rows for class(es) {', '.join(few)}; each needs {MIN_PER_CLASS}")
    return labels, names


def stratified_split(labels: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices: every class split in the same proportion, seeded."""
    rng = generator(seed, Salt.PROBE_SPLIT)
    train, test = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.nonzero(labels == label)[0])
        cut = min(max(1, round(test_share * len(rows))), len(rows) - 1)
        test.append(rows[:cut])
        train.append(rows[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: int,
                l2: float = 1e-3, steps: int = 100) -> np.ndarray:
    """Multinomial logistic regression, deterministic (zero start, full-batch L-BFGS)."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).float()
    y = torch.from_numpy(train_y).long()
    weights = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, y) + l2 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (torch.from_numpy((test_x - mean) / std).float() @ weights + bias).argmax(dim=1).numpy()


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        precision = tp / max(np.sum(predicted == c), 1)
        recall = tp / max(np.sum(truth == c), 1)
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(scores))


@torch.inference_mode()
def embed(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled last hidden states over real tokens: one vector per text."""
    encoder = getattr(model, model.base_model_prefix, model).eval()
    device = next(encoder.parameters()).device  # a trained model may sit on a GPU
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(device)
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1)).float())
    return torch.cat(vectors).cpu().numpy()  # one copy back, not one per batch


def score(features: np.ndarray, labels: np.ndarray, seeds: list[int], test_share: float, name: str) -> ProbeScores:
    """The frozen probe: logistic regression on ``features``, one stratified split per seed."""
    classes = int(labels.max()) + 1
    return split_scores(labels, seeds, test_share, name,
                        lambda train, test, seed: fit_predict(features[train], labels[train], features[test], classes))


def split_scores(labels: np.ndarray, seeds: list[int], test_share: float, name: str, predict) -> ProbeScores:
    """Accuracy and macro-F1 of ``predict(train_rows, test_rows, seed) -> test predictions``
    on one stratified split per seed: the frozen and the fine-tuned probe score alike."""
    classes = int(labels.max()) + 1
    accuracy, f1 = [], []
    for seed in seeds:
        train, test = stratified_split(labels, test_share, seed)
        predicted = predict(train, test, seed)
        accuracy.append(float(np.mean(predicted == labels[test])))
        f1.append(macro_f1(labels[test], predicted, classes))
    return ProbeScores(name, accuracy, f1)


def compare(first: ProbeScores, second: ProbeScores) -> dict:
    """``second`` minus ``first`` per seed (the same splits), and whether the mean difference
    is larger than either model's spread across seeds."""
    out = {}
    for metric in ("accuracy", "macro_f1"):
        diff = np.array(getattr(second, metric)) - np.array(getattr(first, metric))
        spread = max(np.std(getattr(first, metric)), np.std(getattr(second, metric)))
        out[metric] = {"difference_mean": float(diff.mean()), "difference_std": float(diff.std()),
                       "exceeds_spread": bool(abs(diff.mean()) > spread)}
    return out


def probe(config, loaded: dict | None = None) -> dict:
    """Run a ``ProbeConfig``: scores per model (mean and std over seeds), and with two
    models their paired difference. ``loaded`` maps a model name of ``config.models`` to
    a (model, tokenizer) already in memory (a run's trained model)."""
    from mlm_adapt.finetuning import finetuner
    from mlm_adapt.models import load_model, load_tokenizer

    texts, labels, names = labelled_texts(config)
    seeds = [config.seed + i for i in range(config.seeds)]
    results = []
    for model_config in config.models:
        if config.finetune:
            predict = finetuner(model_config, texts, labels, config)
            results.append(split_scores(labels, seeds, config.test_share, model_config.model, predict))
            continue
        model, tokenizer = (loaded or {}).get(model_config.model) or (load_model(model_config), load_tokenizer(model_config))
        features = embed(model, tokenizer, texts, config.max_length)
        results.append(score(features, labels, seeds, config.test_share, model_config.model))
    report = {"mode": "fine-tuned" if config.finetune else "frozen", "classes": names, "rows": len(texts),
              "seeds": seeds, "models": [r.summary() for r in results]}
    if len(results) == 2:
        report["comparison"] = compare(*results)
    return report


def labelled_texts(config) -> tuple[list[str], np.ndarray, list[str]]:
    """The probe's texts (a seeded sample of ``max_rows``), class indices and class names."""
    from mlm_adapt.corpus import Corpus, load_corpus

    corpus = load_corpus(config.data)
    if config.label_column not in corpus.dataset.column_names:
        raise MlmAdaptError(f"--label-column {config.label_column!r} not found; the data has columns: "
                            f"{', '.join(corpus.dataset.column_names)}")
    rows = np.arange(len(corpus))
    if len(rows) > config.max_rows:  # a seeded sample: the file's order may follow the labels
        rows = np.sort(generator(config.seed, Salt.PROBE_ROWS).choice(len(rows), config.max_rows, replace=False))
    subset = corpus.dataset.select(rows)
    labels, names = encode_labels(subset[config.label_column])
    texts = [t for batch in Corpus(subset, corpus.column, corpus.source).batches() for t in batch]
    return texts, labels, names
