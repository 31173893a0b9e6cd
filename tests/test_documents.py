"""Readers: every input kind becomes Documents with the documented ids; bad input becomes an error document."""

from __future__ import annotations

import io
import json

import pytest

from bigbird.tasks.documents import InputError, Inputs, decode_text, iter_dataset, iter_jsonl, iter_paths, iter_texts


def test_folder_is_recursive_sorted_and_ids_are_relative(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.md").write_text("two")
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "skip.json").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden")
    docs = list(iter_paths([str(tmp_path)]))
    assert [d.id for d in docs] == ["a.txt", "b/two.md"]
    assert [d.text for d in docs] == ["one", "two"]
    assert docs[0].source == str(tmp_path / "a.txt")
    assert [d.id for d in iter_paths([str(tmp_path)], globs=["*.json"])] == ["skip.json"]


def test_file_stdin_and_text_ids(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("hello")
    docs = list(iter_paths([str(path), "-"], stdin=io.BytesIO(b"from stdin")))
    assert [(d.id, d.text) for d in docs] == [(str(path), "hello"), ("stdin", "from stdin")]
    texts = list(iter_texts(["a", "b"]))
    assert [(d.id, d.source, d.text) for d in texts] == [("text:0", "--text", "a"), ("text:1", "--text", "b")]


@pytest.mark.parametrize(
    "data, error, warning",
    [
        (b"", "is empty", None),
        (b"  \n\t", "has no text, only whitespace", None),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary", None),
        (b"caf\xe9 ok", None, "not valid UTF-8"),
        (b"\xef\xbb\xbfbom", None, None),
    ],
)
def test_decode_text(data, error, warning):
    text, err, warn = decode_text(data, "f")
    assert (err is None) == (error is None) and (error is None or error in err)
    assert (warn is None) == (warning is None) and (warning is None or warning in warn)
    if err is None:
        assert text and "\ufeff" not in text


def test_invalid_utf8_is_kept_with_replacement(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    [doc] = iter_paths([str(path)])
    assert doc.error is None and doc.text == "caf\ufffd au lait" and "UTF-8" in doc.warning


def test_missing_file_is_an_error_document(tmp_path):
    [doc] = iter_paths([str(tmp_path / "gone.txt")])
    assert doc.id == str(tmp_path / "gone.txt") and "does not exist" in doc.error


def test_jsonl_good_bad_and_missing_fields(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "a", "text": "alpha", "question": "q?"}),
        "{not json",
        "",
        json.dumps({"id": "c"}),
        json.dumps({"text": "no id"}),
        json.dumps([1, 2]),
        json.dumps({"id": 7, "text": 5}),
    ]
    path.write_text("\n".join(lines) + "\n")
    docs = list(iter_jsonl(str(path), extra_fields=["question"]))
    assert [d.id for d in docs] == ["a", f"{path}:2", "c", f"{path}:5", f"{path}:6", "7"]
    assert docs[0].text == "alpha" and docs[0].fields == {"question": "q?"} and docs[0].error is None
    assert "not valid JSON" in docs[1].error
    assert "no 'text' field" in docs[2].error
    assert docs[3].text == "no id" and docs[3].error is None
    assert "not an object" in docs[4].error
    assert "not a string" in docs[5].error


def test_jsonl_custom_fields_and_stdin():
    stream = io.BytesIO(b'{"key": "k1", "body": "text one"}\n')
    [doc] = iter_jsonl("-", text_field="body", id_field="key", stdin=stream)
    assert (doc.id, doc.text, doc.source) == ("k1", "text one", "stdin:1")


def test_dataset_rows_and_local_file(tmp_path):
    rows = [{"text": "one"}, {"text": "two", "id": "x"}, {"body": "three"}]
    docs = list(iter_dataset("mem", "test", rows=rows))
    assert [d.id for d in docs] == ["test:0", "x", "test:2"]
    assert docs[2].error is not None
    csv = tmp_path / "data.csv"
    csv.write_text("id,text\nr1,first row\nr2,second row\n")
    docs = list(iter_dataset(str(csv), "train"))
    assert [(d.id, d.text) for d in docs] == [("r1", "first row"), ("r2", "second row")]


def test_dataset_that_cannot_be_opened_is_an_input_error(tmp_path):
    bad = tmp_path / "data.xyz"
    bad.write_text("x")
    with pytest.raises(InputError):
        Inputs(dataset=str(bad)).open()


def test_inputs_order_and_single_stdin(tmp_path):
    (tmp_path / "f.txt").write_text("file")
    inputs = Inputs(paths=[str(tmp_path / "f.txt")], texts=["inline"])
    assert [d.text for d in inputs.open()] == ["file", "inline"]
    with pytest.raises(InputError):
        Inputs(paths=["-"], jsonl=["-"]).open()
    assert Inputs().is_empty() and not inputs.is_empty()
