"""What is wrong with a user's data, said in one ``error:`` line: unreadable, binary or
wrongly encoded files (checked before ``datasets`` reads them, compressed ones through their
decompression), JSON that is not, and Hub datasets that cannot be loaded."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import datasets

from mlm_adapt.config import DataConfig
from mlm_adapt.errors import MlmAdaptError
from mlm_adapt.system.hub import offline_mode

# Suffixes whose content is text (checked for its encoding), and how much of a file's head
# is sniffed for NUL bytes (binary data).
TEXT_LIKE = {".txt", ".text", ".jsonl", ".json", ".csv"}
SNIFF_BYTES = 1 << 13
# datasets decompresses these on the fly (docs.jsonl.gz reads as docs.jsonl).
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def compressed(name: str) -> bool:
    return name.lower().endswith(COMPRESSIONS)


def builder_suffix(name: str) -> str:
    """A file name's format suffix, looking through a compression suffix (.jsonl for docs.jsonl.gz)."""
    lower = name.lower()
    for suffix in COMPRESSIONS:
        lower = lower.removesuffix(suffix)
    return Path(lower).suffix


def check_readable_text(path: Path, encoding: str, builder: str) -> None:
    """Refuse unreadable, binary or wrongly encoded files before ``datasets`` sees them; a
    compressed file (``docs.jsonl.gz``) is checked as the text it decompresses to."""
    if builder_suffix(path.name) not in TEXT_LIKE:
        try:
            path.open("rb").close()
        except OSError as exc:
            raise MlmAdaptError(f"--data {path}: cannot read the file ({exc.strerror})") from None
        return
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise MlmAdaptError(f"--encoding {encoding!r} is not a known text encoding") from None
    offset = 0
    try:
        with open_decompressed(path) as fh:  # one block at a time: never the whole file in memory
            for block in iter(lambda: fh.read(1 << 20), b""):
                if offset == 0 and b"\x00" in block[:SNIFF_BYTES] and not encoding.lower().startswith("utf-16"):
                    raise MlmAdaptError(f"--data {path}: this looks like binary data, not text (it holds NUL bytes)")
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise encoding_error(str(path), encoding, offset + exc.start) from None
                offset += len(block)
    except (OSError, EOFError) as exc:  # unreadable, or a corrupt archive (gzip raises BadGzipFile, an OSError)
        raise MlmAdaptError(f"--data {path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None


def open_decompressed(path: Path):
    """``path`` opened for reading bytes, through its compression (gzip, bz2, xz, zstd)."""
    if not compressed(path.name):
        return path.open("rb")
    import fsspec

    try:
        return fsspec.open(str(path), "rb", compression="infer").open()
    except ValueError as exc:  # no decompressor installed (zstandard for .zst)
        raise MlmAdaptError(f"--data {path}: cannot decompress ({exc})") from None


def encoding_error(source: str, encoding: str, offset: int | None = None) -> MlmAdaptError:
    """The one message for text that is not in ``--encoding``."""
    where = f" (byte {offset}{' of the decompressed text' if compressed(source) else ''})" if offset is not None else ""
    return MlmAdaptError(f"--data {source}: not valid {encoding} text{where}; pass --encoding with the file's "
                         "encoding, e.g. --encoding latin-1")


def diagnose(path: Path, builder: str, exc: Exception) -> MlmAdaptError:
    if builder == "json" and path.is_file():
        with path.open(encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as err:
                    if number == 1 and path.suffix.lower() == ".json":
                        break  # a single JSON document, not JSON Lines
                    return MlmAdaptError(f"--data {path}: line {number} is not valid JSON ({err.msg})")
    cause = exc.__cause__ or exc
    return MlmAdaptError(f"--data {path}: could not be read as {builder}: {type(cause).__name__}: {cause}")


def hub_error(config: DataConfig, exc: Exception) -> MlmAdaptError:
    offline = offline_mode("HF_DATASETS_OFFLINE")
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if "scripts are no longer supported" in text:
        return MlmAdaptError(
            f"--data {config.data}: this Hub dataset is script-based (a Python loading script), and datasets "
            f"{datasets.__version__} no longer runs loading scripts. Point --data at its data files instead, e.g. "
            "--data hf://datasets/OWNER/NAME/FILE.jsonl.gz (see the repo's file list), or at a Parquet copy of it"
        )
    if "split" in text.lower() and "unknown" in text.lower():
        return MlmAdaptError(f"--split {config.split!r} is not a split of {config.data}: {text}")
    where = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the Hub may be unreachable or the id wrong"
    return MlmAdaptError(
        f"--data {config.data}: could not load this dataset ({where}; {text}). "
        "Check the id, or work offline with a local .txt/.jsonl/.csv/.parquet file or directory."
    )
