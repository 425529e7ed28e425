"""mlm-adapt blend: weight-space interpolation of base and adapted model, measured on the
run's own held-out documents and masks, one blend saved."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_main, train_config
from mlm_adapt.modeling.interpolation import interpolate


@pytest.fixture(scope="module")
def adapted_run(bert_dir, data_root, tmp_path_factory):
    from mlm_adapt.training.loop import train

    output = tmp_path_factory.mktemp("blend") / "adapted"
    config = train_config(bert_dir, data_root / "docs.txt", output, max_steps=8, general_data=str(data_root / "folder"))
    return output, train(config)


def test_the_ends_of_the_blend_are_the_base_and_the_adapted_model(adapted_run, bert_dir, capsys, tmp_path):
    output, metrics = adapted_run
    code, out, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(output), "--alphas", "0,0.5,1",
                              "--precision", "fp32", "--output", str(tmp_path / "picked"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    ends = {e["alpha"]: e for e in summary["alphas"]}
    # The run's own held-out documents and masks (from its config.yaml): a = 0 is the run's "before", a = 1 its "after".
    assert ends[0.0]["perplexity"] == pytest.approx(metrics["perplexity_before"], rel=1e-6)
    assert ends[1.0]["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=1e-6)
    assert ends[0.0]["general_perplexity"] == pytest.approx(metrics["general_perplexity_before"], rel=1e-6)
    assert ends[1.0]["general_perplexity"] == pytest.approx(metrics["general_perplexity_after"], rel=1e-6)
    best = min(summary["alphas"], key=lambda e: e["perplexity"])["alpha"]
    assert summary["picked"] == best and "lowest" in summary["rule"]
    picked = tmp_path / "picked"
    assert (picked / "model.safetensors").is_file() and (picked / "blend.png").is_file()
    assert "Blending" in (picked / "report.html").read_text()
    code, out, err = run_main(capsys, "evaluate", "--model", str(picked), "--data", metrics["data"], "--chunk-size", "48",
                              "--eval-size", "40", "--seed", "7", "--batch-size", "16", "--precision", "fp32", "--json")
    assert code == 0, err
    assert json.loads(out)["perplexity"] == pytest.approx(ends[best]["perplexity"], rel=1e-6)  # the saved blend is the picked one


def test_max_forgetting_picks_the_largest_a_within_the_limit(adapted_run, bert_dir, capsys):
    output, _ = adapted_run
    code, out, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(output), "--alphas", "0,0.25,0.5,0.75,1",
                              "--precision", "fp32", "--max-forgetting", "1", "--json")
    assert code == 0, err
    summary = json.loads(out)
    base = summary["alphas"][0]["general_perplexity"]
    within = [e["alpha"] for e in summary["alphas"] if e["general_perplexity"] <= base * 1.01]
    assert summary["picked"] == max(within) and "at most 1%" in summary["rule"]
    assert all("perplexity_change_interval" in e for e in summary["alphas"][1:])  # paired with the base (a = 0)


def test_interpolation_is_exact_at_the_ends_and_keeps_rows_the_base_lacks():
    base = {"emb": torch.randn(5, 3), "w": torch.randn(3, 3), "ids": torch.arange(4)}
    adapted = {"emb": torch.randn(7, 3), "w": torch.randn(3, 3), "ids": torch.arange(4)}
    zero, one, half = (interpolate(base, adapted, a) for a in (0.0, 1.0, 0.5))
    assert torch.equal(zero["w"], base["w"]) and torch.equal(one["w"], adapted["w"])
    assert torch.equal(zero["emb"][:5], base["emb"]) and torch.equal(zero["emb"][5:], adapted["emb"][5:])
    torch.testing.assert_close(half["emb"][:5], (base["emb"] + adapted["emb"][:5]) / 2)


def test_a_run_that_added_tokens_blends(bert_dir, data_root, tmp_path, capsys):
    from mlm_adapt.training.loop import train

    output = tmp_path / "vocab"
    train(train_config(bert_dir, data_root / "docs.txt", output, max_steps=3, add_tokens=4))
    code, out, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(output), "--alphas", "0,1",
                              "--precision", "fp32", "--json")
    assert code == 0, err
    assert [e["alpha"] for e in json.loads(out)["alphas"]] == [0.0, 1.0]


@pytest.mark.parametrize("args, match", [
    (["--alphas", "0,1.5"], r"--alphas must be numbers in \[0, 1\]"),
    (["--alphas", "0,x"], "--alphas must be numbers separated by commas"),
    (["--max-forgetting", "5"], "--max-forgetting compares general-text perplexities: give --general-data"),
    (["--pick", "0.3", "--alphas", "0,1"], "--pick 0.3 is not one of --alphas"),
])
def test_bad_blend_options_are_one_error_line(bert_dir, data_root, tmp_path, capsys, args, match):
    code, _, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(bert_dir), "--data",
                            str(data_root / "docs.txt"), *args)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err


def test_blending_other_architectures_or_vocabularies_is_refused(bert_dir, roberta_dir, slower_bert, data_root, capsys):
    code, _, err = run_main(capsys, "blend", "--base", str(roberta_dir), "--adapted", str(bert_dir), "--data", str(data_root / "docs.txt"))
    assert code == 2 and "vocabularies differ" in err
    code, _, err = run_main(capsys, "blend", "--base", str(slower_bert), "--adapted", str(bert_dir), "--data", str(data_root / "docs.txt"))
    assert code == 2 and "different architectures" in err


def test_a_run_folder_never_decides_what_may_run_code(adapted_run, bert_dir, capsys, monkeypatch):
    import yaml

    from mlm_adapt.training import blending

    output, _ = adapted_run
    options = yaml.safe_load((output / "config.yaml").read_text())
    (output / "config.yaml").write_text(yaml.safe_dump({**options, "trust_remote_code": True, "allow_pickle": True}))
    seen = []
    monkeypatch.setattr(blending, "blend", lambda config: seen.append(config) or {})
    code, _, err = run_main(capsys, "blend", "--base", str(bert_dir), "--adapted", str(output), "--json")
    (output / "config.yaml").write_text(yaml.safe_dump(options))
    assert code == 0, err
    config = seen[0]
    assert not (config.adapted.trust_remote_code or config.adapted.allow_pickle or config.base.trust_remote_code)
    assert config.data.chunk_size == options["chunk_size"]  # the data options do come from the run
