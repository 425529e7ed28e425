"""mlm-adapt's per-text pseudo-log-likelihood against minicons', side by side: equal
scores, and tokens scored per second.

minicons (Misra 2022) is what researchers use for PLL; its 0.3.x calls
``tokenizer.batch_encode_plus``, which transformers 5 removed, so it runs in a virtual
environment of its own with ``transformers<5`` (``--minicons-python``), on the same model
folder and texts. Both score every text on its own, in fp32, on this CPU:

  mlm-adapt  pseudolikelihood.text_rows + pseudo_token_nll on the model as `mlm-adapt
             evaluate --pseudo` loads it (one copy per scored token, the MLM head and the
             last layer's position-wise part on the scored position only)
  minicons   MaskedLMScorer.sequence_score(texts, PLL_metric=..., reduction=sum)

The model is the distilbert-base-uncased architecture with random weights (speed and
equality do not depend on them) and a made-up 30,522-word vocabulary, saved once.

Set-up of minicons' environment (once):
    python -m venv /tmp/mc && /tmp/mc/bin/pip install torch==2.13.0 && /tmp/mc/bin/pip install 'transformers<5' minicons
Usage:
    python benchmarks/pll_vs_minicons.py --minicons-python /tmp/mc/bin/python [--texts 64] [--out benchmarks/pll-vs-minicons.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

MINICONS = """
import json, sys, time, torch
from minicons import scorer
torch.set_num_threads({threads})
texts = json.load(open(sys.argv[1]))
model = scorer.MaskedLMScorer(sys.argv[2], "cpu")
out = {{}}
for metric in ("original", "within_word_l2r"):
    began = time.perf_counter()
    scores = []
    for start in range(0, len(texts), {batch}):
        scores += model.sequence_score(texts[start:start + {batch}], reduction=lambda x: x.sum(0).item(), PLL_metric=metric)
    out[metric] = {{"nll": [-s for s in scores], "seconds": time.perf_counter() - began}}
print(json.dumps(out))
"""


def make_model(folder: Path) -> None:
    import torch
    from transformers import AutoModelForMaskedLM

    from gpu_throughput import model_config, tokenizer

    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(model_config("distilbert", smoke=False)).save_pretrained(folder)
    tokenizer().save_pretrained(folder)


def make_texts(count: int, seed: int = 0) -> list[str]:
    """Texts of 8-40 words of the made-up vocabulary. Its words are whole tokens (it has no
    "##" pieces), so here the two variants score alike; tests/test_pseudolikelihood.py checks
    word-l2r on split words against the one-forward-per-token loop."""
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{rng.integers(5, 30000)}" for _ in range(rng.integers(8, 41))) for _ in range(count)]


def ours(folder: Path, texts: list[str], word_l2r: bool, batch: int, bf16: bool = False) -> dict:
    """Our scores and time; ``bf16``: under bf16 autocast, as `--precision auto` runs on a
    CPU with AVX512-BF16 or AMX (scores then differ in the third or fourth digit)."""
    import contextlib

    import torch

    from mlm_adapt.config import ModelConfig
    from mlm_adapt.evaluation.pseudolikelihood import pseudo_token_nll, text_rows
    from mlm_adapt.modeling.loading import load_model, load_tokenizer
    from mlm_adapt.modeling.objective import MaskedLMObjective

    config = ModelConfig(str(folder))
    tokenizer, model = load_tokenizer(config), load_model(config).eval()
    began = time.perf_counter()
    rows = text_rows(tokenizer, texts, 512)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        token_nll = pseudo_token_nll(MaskedLMObjective(model), rows, tokenizer.mask_token_id, "cpu", batch, word_l2r)
    return {"nll": token_nll.sum(axis=1).tolist(), "tokens": int((rows.word_ids >= 0).sum()),
            "seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minicons-python", required=True, help="python of an environment with minicons and transformers<5")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="masked copies per forward pass (ours); texts per call (minicons)")
    parser.add_argument("--out", type=Path, default=HERE / "pll-vs-minicons.json")
    args = parser.parse_args()
    import torch

    texts = make_texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "distilbert-random"
        make_model(folder)
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        script = MINICONS.format(threads=torch.get_num_threads(), batch=max(1, args.batch // 32))
        done = subprocess.run([args.minicons_python, "-c", script, str(Path(tmp) / "texts.json"), str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"minicons failed: {done.stderr[-2000:]}")
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        report = {"texts": len(texts), "threads": torch.get_num_threads(), "variants": {}}
        from mlm_adapt.system.runtime import cpu_supports_bf16

        runs = [("original", "original", False), ("word-l2r", "within_word_l2r", False)]
        if cpu_supports_bf16():
            runs.append(("word-l2r, ours in bf16", "within_word_l2r", True))
        report["cpu_bf16"] = cpu_supports_bf16()
        for variant, metric, bf16 in runs:
            mine = ours(folder, texts, metric == "within_word_l2r", args.batch, bf16)
            difference = np.abs(np.array(mine["nll"]) - np.array(theirs[metric]["nll"]))
            report["variants"][variant] = {
                "max_abs_difference": float(difference.max()),
                "max_rel_difference": float((difference / np.abs(theirs[metric]["nll"])).max()),
                "tokens": mine["tokens"], "ours_tokens_per_second": mine["tokens"] / mine["seconds"],
                "minicons_tokens_per_second": mine["tokens"] / theirs[metric]["seconds"],
                "speedup": theirs[metric]["seconds"] / mine["seconds"]}
            print(variant, json.dumps(report["variants"][variant]), flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
