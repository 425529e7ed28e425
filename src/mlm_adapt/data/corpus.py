"""Reading a corpus of documents from the Hub or from local files.

``--data`` names either a local path (``.txt`` with one document per line,
``.jsonl``/``.json``, ``.csv``, ``.parquet``, or a directory of ``.txt`` files
with one document per file) or a Hub dataset id with an optional config after a
colon (``wikitext:wikitext-2-raw-v1``). Loading goes through ``datasets`` in every
case, so files are memory-mapped Arrow tables rather than Python strings.
"""

from __future__ import annotations

import codecs
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import datasets

from mlm_adapt.config import DataConfig
from mlm_adapt.data.file_checks import builder_suffix, check_readable_text, compressed, diagnose, encoding_error, hub_error
from mlm_adapt.errors import MlmAdaptError

BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# A data file named by URL: hf://datasets/OWNER/NAME/FILE (any Hub repo's file) or http(s).
REMOTE_PREFIXES = ("hf://", "https://", "http://")


@dataclass(frozen=True)
class Corpus:
    """A loaded dataset and the column (or dotted path into nested fields) holding each document."""

    dataset: datasets.Dataset
    column: str
    source: str

    def __len__(self) -> int:
        return len(self.dataset)

    encoding: str = "utf-8"

    def batches(self, batch_size: int = 1_000) -> Iterator[list[str]]:
        """Documents in order, a batch at a time; list values joined by a space (the ELI5 notebook's answers.text)."""
        with decoded(self.source, self.encoding):
            for batch in self.dataset.select_columns([_head(self.dataset, self.column)]).iter(batch_size=batch_size):
                yield column_texts(batch, self.column)


@dataclass(frozen=True)
class StreamedCorpus:
    """A corpus read as a stream (``--streaming``): documents in order, never all in memory.

    The text column is found in the first records rather than in a schema, because
    streamed text and JSON files have none until they are read.
    """

    dataset: datasets.IterableDataset
    column: str
    source: str

    encoding: str = "utf-8"

    def batches(self, batch_size: int = 1_000) -> Iterator[list[str]]:
        with decoded(self.source, self.encoding):
            for batch in self.dataset.iter(batch_size=batch_size):
                yield column_texts(batch, self.column)


@contextmanager
def decoded(source: str, encoding: str) -> Iterator[None]:
    """Text that is not in ``--encoding`` found while reading (a remote or compressed file
    that could not be checked in advance) is the user's error, not a traceback. datasets
    wraps it in its own error type while generating a dataset: the cause is looked for."""
    try:
        yield
    except Exception as exc:
        cause = exc
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise encoding_error(source, encoding) from None


def column_texts(batch: dict[str, list], column: str) -> list[str]:
    """The text of ``column`` for each record of a batch (columns -> values), both paths' one reader.

    A dotted path walks nested fields: through a record (``{"answers": {"text": [...]}}``,
    the ELI5 layout) or each record of a list (``{"answers": [{"text": ...}, ...]}``).
    """
    if column in batch:
        return [_as_text(value) for value in batch[column]]
    head, *rest = column.split(".")
    if head not in batch:
        raise MlmAdaptError(f"--text-column {column!r} not found; the data has columns: {', '.join(batch) or 'none'}")
    values = batch[head]
    for depth, key in enumerate(rest, start=1):
        values = [_field(value, key, column, depth) for value in values]
    return [_as_text(value) for value in values]


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_as_text(v) for v in value)
    return str(value)


def _field(value: object, key: str, column: str, depth: int) -> object:
    """``value[key]`` for a record, or for each record of a list (``answers.text``)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_field(v, key, column, depth) for v in value]
    if not isinstance(value, dict) or key not in value:
        prefix = ".".join(column.split(".")[:depth])
        found = ", ".join(f"{prefix}.{k}" for k in value) if isinstance(value, dict) else type(value).__name__
        raise MlmAdaptError(f"--text-column {column!r} not found: {prefix} holds {found}")
    return value[key]


def load_corpus(config: DataConfig) -> Corpus | StreamedCorpus:
    """Load ``config.data`` and resolve ``config.text_column`` in it (a stream with ``--streaming``)."""
    datasets.disable_progress_bars()
    path = Path(config.data).expanduser()
    if config.document_boundary is not None and _builder_for(config.data) != "text" and not path.is_dir():
        raise MlmAdaptError(f"--document-boundary applies to .txt input (and folders of it); in {config.data} each "
                            "record is a document")
    if path.exists():
        dataset = _load_local(path, config)
    elif config.data.startswith(REMOTE_PREFIXES):
        dataset = _load_remote(config)
    elif _looks_like_path(config.data):
        raise MlmAdaptError(f"--data {config.data}: no such file or directory")
    else:
        dataset = _load_hub(config)
    if config.streaming:
        return StreamedCorpus(dataset, config.text_column, config.data, config.encoding)
    corpus = Corpus(dataset, config.text_column, config.data, config.encoding)
    if len(dataset):  # a path that does not resolve fails now, not after a long tokenization
        with decoded(config.data, config.encoding):
            column_texts(dataset.select_columns([_head(dataset, config.text_column)])[:1], config.text_column)
    return corpus


def numbered_documents(config: DataConfig) -> Iterator[tuple[int, int, str]]:
    """(row in --data, document number, text) of each non-empty row: the documents as the
    data stage numbers them (tokenization skips empty texts; held-out sets are numbers)."""
    row = number = 0
    for batch in load_corpus(config).batches():
        for text in batch:
            if text.strip():
                yield row, number, text
                number += 1
            row += 1


def read_texts(config: DataConfig, limit: int) -> Iterator[str]:
    """The texts of the first ``limit`` documents of ``config.data`` (a stream is read no further)."""
    for batch in load_corpus(config).batches():
        for text in batch[:limit]:
            yield text
        limit -= len(batch)
        if limit <= 0:
            return


def _looks_like_path(spec: str) -> bool:
    """A missing local path, as opposed to a Hub id (which has no suffix and no leading ./ or /)."""
    return spec.startswith((".", "/", "~")) or _builder_for(spec) is not None


def _builder_for(name: str) -> str | None:
    """The datasets builder for a file name, looking through a compression suffix."""
    return BUILDERS.get(builder_suffix(name))


# --document-boundary as the datasets text builder's sample_by.
_SAMPLE_BY = {"line": "line", "blank-line": "paragraph", "file": "document"}


def _text_options(builder: str, encoding: str, boundary: str | None = None) -> dict:
    """Builder options: a .txt file is a document per line (or --document-boundary's unit);
    text formats take --encoding."""
    options = {"sample_by": _SAMPLE_BY[boundary or "line"]} if builder == "text" else {}
    if builder in ("text", "csv", "json"):
        options["encoding"] = encoding
    return options


def _load_remote(config: DataConfig) -> datasets.Dataset | datasets.IterableDataset:
    """One data file by URL, e.g. a script-based Hub dataset's raw files (datasets 4 no longer runs scripts)."""
    builder = _builder_for(config.data)
    if builder is None:
        known = ", ".join(sorted(BUILDERS))
        raise MlmAdaptError(f"--data {config.data}: a data file URL must end in one of {known} (optionally .gz, .bz2, .xz, .zst)")
    try:
        with decoded(config.data, config.encoding):
            return _load(config, builder, data_files=[config.data], **_text_options(builder, config.encoding, config.document_boundary))
    except MlmAdaptError:
        raise
    except Exception as exc:  # network, HTTP and parser errors of many types
        raise hub_error(config, exc) from None


def _load_local(path: Path, config: DataConfig) -> datasets.Dataset:
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in (".txt", ".text") and p.is_file())
        if not files:
            raise MlmAdaptError(f"--data {path}: the directory holds no .txt files")
        builder, kwargs = "text", {"sample_by": _SAMPLE_BY[config.document_boundary or "file"], "encoding": config.encoding}
    else:
        builder = _builder_for(path.name)
        if builder is None:
            known = ", ".join(sorted(BUILDERS))
            raise MlmAdaptError(f"--data {path}: unknown file type {path.suffix!r}; use one of {known} or a directory")
        files, kwargs = [str(path)], _text_options(builder, config.encoding, config.document_boundary)
    for file in files:
        check_readable_text(Path(file), config.encoding, builder)
        if builder == "text" and compressed(file) and codecs.lookup(config.encoding).name != "utf-8":
            # datasets 4-5's text builder opens a compressed file as UTF-8 whatever its
            # encoding option says (its JSON and CSV builders honour it).
            raise MlmAdaptError(f"--data {file}: compressed .txt files are read as UTF-8 only (a limitation of the "
                                f"datasets library), not {config.encoding}; decompress the file, or convert it to "
                                f"UTF-8 (iconv -f {config.encoding} -t utf-8)")
    try:
        with decoded(str(path), config.encoding):
            return _load(config, builder, data_files=files, **kwargs)
    except MlmAdaptError:
        raise
    except (ValueError, KeyError) as exc:
        if "split" in str(exc).lower():
            raise MlmAdaptError(f"--split {config.split!r} does not fit a local file; use 'train' or a slice like 'train[:5000]'") from None
        raise diagnose(path, builder, exc) from None
    except Exception as exc:  # datasets wraps parser errors in DatasetGenerationError
        raise diagnose(path, builder, exc) from None


_HEAD_SLICE = re.compile(r"^(\w+)\[:(\d+)\]$")
STREAM_CHUNK_BYTES = 1 << 20


def _load(config: DataConfig, *args, **kwargs) -> datasets.Dataset | datasets.IterableDataset:
    """``datasets.load_dataset`` in memory, or as a stream where ``split[:N]`` becomes ``take(N)``
    (streams have no other slices)."""
    if not config.streaming:
        return datasets.load_dataset(*args, split=config.split, **kwargs)
    if args and args[0] in ("json", "text"):
        # A stream holds this much of the file's raw text at a time (datasets reads 10 MB), and
        # the rows parsed from it: what bounds the memory of a stream's reader.
        kwargs.setdefault("chunksize", STREAM_CHUNK_BYTES)
    split, take = config.split, None
    head = _HEAD_SLICE.match(split)
    if head:
        split, take = head.group(1), int(head.group(2))
    elif "[" in split:
        raise MlmAdaptError(f"--split {split!r}: with --streaming only a split name or a head like 'train[:5000]' works")
    stream = datasets.load_dataset(*args, split=split, streaming=True, **kwargs)
    return stream.take(take) if take is not None else stream


def _load_hub(config: DataConfig) -> datasets.Dataset:
    name, _, subset = config.data.partition(":")
    try:
        return _load(config, name, subset or None)
    except MlmAdaptError:
        raise
    except Exception as exc:  # the Hub client raises many unrelated types
        raise hub_error(config, exc) from None


def _head(dataset: datasets.Dataset, column: str) -> str:
    """The top-level column ``column`` starts in (itself, if a column has that very name)."""
    head = column if column in dataset.column_names else column.split(".")[0]
    if head not in dataset.column_names:
        known = ", ".join(dataset.column_names) or "none"
        raise MlmAdaptError(f"--text-column {column!r} not found; the data has columns: {known}")
    return head
