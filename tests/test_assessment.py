"""mlm-adapt assess: is a corpus worth adapting to, measured before a long run."""

from __future__ import annotations

import json
import random

import pytest

from conftest import run_main, train_config


@pytest.fixture(scope="module")
def general_model(bert_dir, data_root, tmp_path_factory):
    """The tiny BERT trained on the fixture's documents: they are its "general text"."""
    from mlm_adapt.training.loop import train

    output = tmp_path_factory.mktemp("assess") / "general-model"
    train(train_config(bert_dir, data_root / "docs.txt", output, max_steps=60, lr=1e-2))
    return output


def _assess(capsys, model, data, general) -> dict:
    code, out, err = run_main(capsys, "assess", "--model", str(model), "--data", str(data), "--general-data", str(general),
                              "--chunk-size", "48", "--eval-size", "40", "--batch-size", "16", "--precision", "fp32", "--json")
    assert code == 0, err
    return json.loads(out)


def test_the_general_text_itself_has_little_to_gain_and_a_far_domain_much(general_model, data_root, tmp_path, capsys):
    same = _assess(capsys, general_model, data_root / "docs.txt", data_root / "docs.txt")
    assert same["headroom"] == pytest.approx(1.0) and "little to gain" in same["recommendation"]
    rng = random.Random(0)
    far = [" ".join("".join(rng.choice("qxzjkvwy") for _ in range(rng.randint(3, 8))) for _ in range(rng.randint(20, 60)))
           for _ in range(300)]
    (tmp_path / "far.txt").write_text("\n".join(far) + "\n", encoding="utf-8")
    other = _assess(capsys, general_model, tmp_path / "far.txt", data_root / "docs.txt")
    assert other["headroom"] > 2 and "large headroom" in other["recommendation"]
    for result in (same, other):  # the keys scripts read
        assert {"base_perplexity", "fertility", "duplicate_share", "training_chunks", "seconds_per_step",
                "recommendation"} <= set(result)
        assert result["seconds_per_step"] > 0 and result["training_chunks"] > 0


def test_a_corpus_of_duplicates_is_told_to_deduplicate_first(general_model, data_root, tmp_path, capsys):
    documents = (data_root / "docs.txt").read_text(encoding="utf-8").splitlines()[:100]
    repeated = documents + [d.upper() + "  " for d in documents[:60]]  # 60 of 160 equal up to case and white space
    (tmp_path / "dupes.txt").write_text("\n".join(repeated) + "\n", encoding="utf-8")
    result = _assess(capsys, general_model, tmp_path / "dupes.txt", data_root / "docs.txt")
    assert result["duplicate_share"] == pytest.approx(60 / 160)
    assert result["recommendation"].startswith("38% of the documents are duplicates: deduplicate first")



def test_a_corpus_of_near_duplicates_is_told_to_deduplicate_first(general_model, data_root, tmp_path, capsys):
    rng = random.Random(1)

    def words(n: int) -> list[str]:
        return ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(n)]

    documents = [" ".join(words(30)) for _ in range(100)]
    edited = [" ".join(d.split()[:-1] + words(1)) for d in documents[:60]]  # each with its last word changed
    (tmp_path / "near.txt").write_text("\n".join(documents + edited) + "\n", encoding="utf-8")
    result = _assess(capsys, general_model, tmp_path / "near.txt", data_root / "docs.txt")
    assert result["duplicate_share"] == 0 and result["near_duplicate_share"] == pytest.approx(60 / 160)
    assert result["recommendation"].startswith("38% of the documents are near duplicates")

def test_assess_prints_a_table_and_the_recommendation(general_model, data_root, capsys):
    code, out, _ = run_main(capsys, "assess", "--model", str(general_model), "--data", str(data_root / "docs.txt"),
                            "--chunk-size", "48", "--eval-size", "40", "--batch-size", "16")
    assert code == 0 and "recommendation:" in out and "give --general-data" in out
