"""The fine-tuned probe: a short full fine-tune finds a label one word reveals, not noise."""

from __future__ import annotations

import json

import numpy as np

from conftest import labelled_csv, make_documents, one_word_label_files, run_main
from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig
from mlm_adapt.evaluation import probing


def test_finetuning_finds_a_one_word_label_and_not_a_random_one(bert_dir, tmp_path):
    detectable, noise = one_word_label_files(tmp_path, 120, doc_seed=9, label_seed=1)
    # A tiny random encoder needs a larger step than a pretrained one (default 5e-5).
    common = dict(models=(ModelConfig(str(bert_dir)),), seeds=3, max_length=48, finetune=True,
                  finetune_epochs=8, finetune_lr=2e-3, precision="fp32")
    found = probing.probe(ProbeConfig(data=DataConfig(str(detectable)), **common))
    chance = probing.probe(ProbeConfig(data=DataConfig(str(noise)), **common))
    assert found["mode"] == "fine-tuned"
    found, chance = found["models"][0], chance["models"][0]
    assert found["accuracy_mean"] > 0.85 and chance["accuracy_mean"] < 0.75
    assert found["accuracy_mean"] - found["accuracy_std"] > chance["accuracy_mean"] + chance["accuracy_std"]


def test_finetuning_is_seeded_and_leaves_the_model_folder_unchanged(capsys, bert_dir, tmp_path):
    before = {p.name: p.read_bytes() for p in bert_dir.iterdir() if p.is_file()}
    data = labelled_csv(tmp_path / "d.csv", make_documents(40, seed=3), ["a", "b"] * 20)
    args = ("probe", "--model", str(bert_dir), "--data", str(data), "--finetune", "--finetune-epochs", "1",
            "--seeds", "2", "--precision", "fp32", "--json")
    code, out, err = run_main(capsys, *args)
    assert code == 0, err
    first = json.loads(out)
    code, out, _ = run_main(capsys, *args)
    assert json.loads(out)["models"] == first["models"] and first["mode"] == "fine-tuned"
    assert len(first["models"][0]["accuracy"]) == 2 and np.all(np.array(first["models"][0]["accuracy"]) <= 1)
    assert {p.name: p.read_bytes() for p in bert_dir.iterdir() if p.is_file()} == before
    code, _, err = run_main(capsys, *args[:-1], "--finetune-lr", "0")
    assert code == 2 and "--finetune-lr must be a positive number" in err


def test_the_main_process_of_a_multi_process_run_fine_tunes_alone(bert_dir, tmp_path):
    # After a data-parallel run only the main process probes: a fine-tune that built a DDP
    # wrapper would wait for the other process in a collective forever.
    import os
    import sys

    data = labelled_csv(tmp_path / "d.csv", make_documents(40, seed=3), ["a", "b"] * 20)
    script = tmp_path / "probe_on_rank_0.py"
    script.write_text(
        "from accelerate import PartialState\n"
        "from mlm_adapt.evaluation import probing\n"
        "from mlm_adapt.config import DataConfig, ModelConfig, ProbeConfig\n"
        "state = PartialState(cpu=True)\n"
        "if state.is_main_process:\n"
        f"    report = probing.probe(ProbeConfig(models=(ModelConfig({str(bert_dir)!r}),), data=DataConfig({str(data)!r}),\n"
        "                            seeds=1, finetune=True, finetune_epochs=1, max_length=32, precision='fp32'))\n"
        "    print('accuracy', report['models'][0]['accuracy_mean'])\n"
        "state.wait_for_everyone()\n"
        # One write a line: print() writes "done", " 0" and "\\n" apart when unbuffered, and the
        # two processes' pieces interleaved in one CI run ("donedone 1\\n 0").
        "import sys\n"
        "sys.stdout.write(f'done {state.process_index}\\n')\n"
        "sys.stdout.flush()\n")
    from conftest import free_port, launch

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                   str(script)], timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout and "done 0" in done.stdout and "done 1" in done.stdout
