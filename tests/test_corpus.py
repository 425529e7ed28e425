"""Every input format the CLI accepts, and a clear error for each bad one."""

from __future__ import annotations

import pytest

from mlm_adapt.config import DataConfig
from mlm_adapt.data.corpus import load_corpus
from mlm_adapt.errors import MlmAdaptError


def _docs(config: DataConfig) -> list[str]:
    return [d for batch in load_corpus(config).batches() for d in batch]


def test_txt_is_one_document_per_line(data_root, documents):
    assert _docs(DataConfig(data=str(data_root / "docs.txt"))) == documents


def test_nested_jsonl_field_lists_are_joined_with_a_space(data_root, documents):
    docs = _docs(DataConfig(data=str(data_root / "nested.jsonl"), text_column="answers.text"))
    assert [d.replace(" ", "") for d in docs] == [d.replace(" ", "") for d in documents]
    half = len(documents[0]) // 2
    assert docs[0] == documents[0][:half] + " " + documents[0][half:]


def test_csv_column(data_root, documents):
    assert _docs(DataConfig(data=str(data_root / "reviews.csv"), text_column="review")) == documents


def test_parquet(tmp_path, documents):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": documents[:10]}), tmp_path / "d.parquet")
    assert _docs(DataConfig(data=str(tmp_path / "d.parquet"))) == documents[:10]


def test_directory_is_one_document_per_file(data_root):
    docs = _docs(DataConfig(data=str(data_root / "folder")))
    assert len(docs) == 120
    assert "\n" in docs[0]  # the whole file, not a line


def test_split_slices_work_on_local_files(data_root, documents):
    assert _docs(DataConfig(data=str(data_root / "docs.txt"), split="train[:7]")) == documents[:7]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"), "binary"),
        (lambda p: p.write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1")), "not valid utf-8.*--encoding"),
    ],
    ids=["missing", "binary", "not-utf8"],
)
def test_bad_text_files(tmp_path, make, match):
    path = tmp_path / "corpus.txt"
    make(path)
    with pytest.raises(MlmAdaptError, match=match):
        load_corpus(DataConfig(data=str(path)))


def test_encoding_option_reads_latin1(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me\nna\u00efve\n".encode("latin-1"))
    assert _docs(DataConfig(data=str(path), encoding="latin-1")) == ["caf\u00e9 cr\u00e8me", "na\u00efve"]


def test_unknown_encoding(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello\n")
    with pytest.raises(MlmAdaptError, match="not a known text encoding"):
        load_corpus(DataConfig(data=str(path), encoding="klingon-8"))


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n')
    with pytest.raises(MlmAdaptError, match="line 3 is not valid JSON"):
        load_corpus(DataConfig(data=str(path)))


def test_missing_column_lists_the_columns(data_root):
    with pytest.raises(MlmAdaptError, match="'text' not found.*label, review"):
        load_corpus(DataConfig(data=str(data_root / "reviews.csv")))


def test_dotted_path_that_does_not_resolve(data_root):
    with pytest.raises(MlmAdaptError, match="answers.body.*answers.text"):
        load_corpus(DataConfig(data=str(data_root / "nested.jsonl"), text_column="answers.body"))


def test_unknown_extension_and_empty_directory(tmp_path):
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(MlmAdaptError, match="unknown file type"):
        load_corpus(DataConfig(data=str(tmp_path / "x.docx")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlmAdaptError, match="no .txt files"):
        load_corpus(DataConfig(data=str(tmp_path / "empty")))


def test_hub_dataset_offline_says_so():
    with pytest.raises(MlmAdaptError, match="offline mode is on.*local"):
        load_corpus(DataConfig(data="someone/no-such-dataset-xyz"))


def test_empty_and_whitespace_corpus_is_refused(tmp_path, bert_dir):
    from transformers import AutoTokenizer

    from mlm_adapt.data.tokenization import tokenize_corpus

    tok = AutoTokenizer.from_pretrained(bert_dir)
    for content in ("", "   \n\n\t\n"):
        path = tmp_path / "blank.txt"
        path.write_text(content)
        with pytest.raises(MlmAdaptError, match="empty"):
            tokenize_corpus(load_corpus(DataConfig(data=str(path))), tok)


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streamed"])
def test_latin1_jsonl_is_read_with_the_encoding_option(tmp_path, streaming):
    import json

    docs = ["Un café très sympa.", "Ça coûte 5 €? Non, 5 £.".replace("€", "e"), "Naïve résumé."]
    path = tmp_path / "latin.jsonl"
    path.write_bytes("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode("latin-1"))
    assert _docs(DataConfig(data=str(path), encoding="latin-1", streaming=streaming)) == docs
    with pytest.raises(MlmAdaptError, match="not valid utf-8 text.*--encoding latin-1"):
        _docs(DataConfig(data=str(path), streaming=streaming))


def test_json_array_file(tmp_path, documents):
    import json

    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"id": i, "meta": {"body": d}} for i, d in enumerate(documents[:20])]), encoding="utf-8")
    assert _docs(DataConfig(data=str(path), text_column="meta.body")) == documents[:20]


def test_lists_of_records_read_the_same_in_memory_and_streamed(tmp_path, documents):
    import json

    # The other common nested layout: a list of records, each with its own text.
    path = tmp_path / "threads.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, doc in enumerate(documents[:30]):
            half = len(doc) // 2
            fh.write(json.dumps({"id": i, "answers": [{"text": doc[:half], "score": 1}, {"text": doc[half:], "score": 2}]}) + "\n")
    in_memory = _docs(DataConfig(data=str(path), text_column="answers.text"))
    streamed = _docs(DataConfig(data=str(path), text_column="answers.text", streaming=True))
    assert in_memory == streamed
    assert in_memory[0] == documents[0][: len(documents[0]) // 2] + " " + documents[0][len(documents[0]) // 2:]
    with pytest.raises(MlmAdaptError, match="'answers.body' not found: answers holds answers.text, answers.score"):
        load_corpus(DataConfig(data=str(path), text_column="answers.body"))


def test_compressed_local_file(tmp_path, documents):
    import gzip
    import json

    with gzip.open(tmp_path / "docs.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": d}) + "\n" for d in documents[:15])
    assert _docs(DataConfig(data=str(tmp_path / "docs.jsonl.gz"))) == documents[:15]


def test_a_data_file_url_goes_to_its_builder(monkeypatch):
    import datasets

    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"answers": [{"text": ["a b", "c"]}]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    url = "hf://datasets/rexarski/eli5_category/eli5-category-train.json.gz"
    assert _docs(DataConfig(data=url, text_column="answers.text", split="train[:5000]")) == ["a b c"]
    assert calls == [(("json",), {"data_files": [url], "encoding": "utf-8", "split": "train[:5000]"})]
    with pytest.raises(MlmAdaptError, match="a data file URL must end in one of"):
        load_corpus(DataConfig(data="https://example.org/corpus.docx"))


def test_a_script_based_hub_dataset_is_named_as_such(monkeypatch):
    import datasets

    def scripted(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found eli5_category.py")

    monkeypatch.setattr(datasets, "load_dataset", scripted)
    with pytest.raises(MlmAdaptError, match="eli5_category: this Hub dataset is script-based.*hf://datasets/"):
        load_corpus(DataConfig(data="eli5_category"))


def _compressed_latin1(path, docs):
    """``docs`` in Latin-1, written through the compression ``path``'s suffix names."""
    import bz2
    import csv
    import gzip
    import io
    import json
    import lzma

    if ".csv" in path.name:
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["text"], *[[d] for d in docs]])
        text = buffer.getvalue()
    elif ".jsonl" in path.name:
        text = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    else:
        text = "\n".join(docs) + "\n"
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[path.suffix]
    with opener(path, "wb") as fh:
        fh.write(text.encode("latin-1"))
    return path


@pytest.mark.parametrize("name", ["latin.jsonl.gz", "latin.csv.gz", "latin.txt.bz2", "latin.jsonl.xz"])
@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streamed"])
def test_compressed_text_in_another_encoding_is_a_user_error(tmp_path, name, streaming):
    docs = ["Un café très sympa.", "Naïve résumé, crème brûlée."] * 3
    path = _compressed_latin1(tmp_path / name, docs)
    with pytest.raises(MlmAdaptError, match=rf"--data .*{name}: not valid utf-8 text.*--encoding latin-1"):
        _docs(DataConfig(data=str(path), streaming=streaming))
    if ".txt" in name:  # datasets reads compressed text files as UTF-8 only: said, not a traceback
        with pytest.raises(MlmAdaptError, match="compressed .txt files are read as UTF-8 only.*iconv"):
            _docs(DataConfig(data=str(path), encoding="latin-1", streaming=streaming))
    else:
        assert _docs(DataConfig(data=str(path), encoding="latin-1", streaming=streaming)) == docs


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streamed"])
def test_a_decoding_error_found_while_reading_is_a_user_error(tmp_path, monkeypatch, streaming):
    # What a remote file (hf://...json.gz) meets: no check before datasets reads it.
    from mlm_adapt.data import corpus

    monkeypatch.setattr(corpus, "check_readable_text", lambda *args: None)
    path = _compressed_latin1(tmp_path / "latin.jsonl.gz", ["Un café très sympa."] * 4)
    with pytest.raises(MlmAdaptError, match="not valid utf-8 text; pass --encoding"):
        _docs(DataConfig(data=str(path), streaming=streaming))


def test_evaluate_on_compressed_latin1_exits_2_with_one_error_line(tmp_path, bert_dir, capsys):
    from conftest import run_main

    path = _compressed_latin1(tmp_path / "latin.jsonl.gz", ["Un café très sympa, the film was good."] * 40)
    code, _, err = run_main(capsys, "evaluate", "--model", str(bert_dir), "--data", str(path), "--chunk-size", "16")
    assert code == 2 and err.strip().startswith("error: --data") and "--encoding" in err and "Traceback" not in err


@pytest.mark.parametrize("boundary, expected", [(None, 6), ("line", 6), ("blank-line", 2), ("file", 1)])
def test_document_boundary_of_text_input(tmp_path, boundary, expected):
    # Two articles of three lines each, separated by a blank line.
    path = tmp_path / "articles.txt"
    path.write_text("a1 one.\na1 two.\na1 three.\n\na2 one.\na2 two.\na2 three.\n", encoding="utf-8")
    docs = [d for d in _docs(DataConfig(data=str(path), document_boundary=boundary)) if d.strip()]
    assert len(docs) == expected
    if boundary == "blank-line":
        assert docs[0].split() == ["a1", "one.", "a1", "two.", "a1", "three."]


def test_document_boundary_is_refused_where_records_are_documents(data_root):
    with pytest.raises(MlmAdaptError, match="--document-boundary applies to .txt input"):
        load_corpus(DataConfig(data=str(data_root / "reviews.csv"), document_boundary="blank-line"))
    with pytest.raises(MlmAdaptError, match="--document-boundary must be one of line, blank-line, file"):
        DataConfig(document_boundary="sentence")
