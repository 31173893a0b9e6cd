"""Readers: every input kind becomes Documents with the documented ids; bad input becomes an error document."""

from __future__ import annotations

import codecs
import io
import json
import os
import sys

import pytest
from conftest import BAKER, jsonl

from bigbird.tasks.documents import (
    Document,
    InputError,
    Inputs,
    decode_text,
    iter_dataset,
    iter_jsonl,
    iter_paths,
    iter_texts,
)


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


def test_duplicate_ids_in_jsonl_are_error_records_not_skips(offline_hub, tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n{"id": "b", "text": "three"}\n')
    docs = list(Inputs(jsonl=[str(path)]).open())
    assert [d.id for d in docs] == ["a", "a", "b"]
    assert docs[0].error is None and "already used" in docs[1].error and docs[2].error is None


def test_utf16_files_and_boms_are_read(offline_hub, tmp_path):
    for name, encoding in [("le.txt", "utf-16"), ("be.txt", "utf-16-be")]:
        data = "Grüße aus Köln.".encode(encoding)
        (tmp_path / name).write_bytes(data if encoding == "utf-16" else b"\xfe\xff" + data)
    docs = list(iter_paths([str(tmp_path)]))
    assert [(d.text, d.error) for d in docs] == [("Grüße aus Köln.", None)] * 2
    records = tmp_path / "r.jsonl"
    records.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "first"}\n{"id": "b", "text": "caf\xe9"}\n')
    first, second = iter_jsonl(str(records))
    assert (first.id, first.text, first.error) == ("a", "first", None)
    assert second.error is None and "not valid UTF-8" in second.warning
    assert decode_text(b"caf\xe9", "x")[2] is not None  # the same warning as in text files


def test_messages_read_as_sentences(offline_hub, tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "n", "text": 5}\n[1]\n')
    number, listed = iter_jsonl(str(path))
    assert number.error == "field 'text' is a number, not a string." and "a list" in listed.error
    [gone] = iter_paths([str(tmp_path / "gone.txt")])
    assert "gone.txt" not in gone.error  # the record's id already names it


def test_documents_keep_printable_ids(offline_hub):
    assert Document("caf\udce9.txt", "s").id == "caf\\xe9.txt"
    assert Document("\ud800", "s").id == "\\ud800"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_jsonl_is_read(offline_hub, tmp_path, encoding):
    records = tmp_path / "u.jsonl"
    records.write_bytes('{"id": "u", "text": "hi"}\n{"id": "v",\r"text": "ho"}\n'.encode(encoding))  # CR: JSON space
    docs = list(iter_jsonl(str(records)))
    assert [(d.id, d.text, d.error) for d in docs] == [("u", "hi", None), ("v", "ho", None)]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_bad_units_in_utf16_and_utf32_jsonl_are_replaced_with_a_warning(offline_hub, tmp_path, encoding):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding)
    bom = bom or {"utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}[encoding]
    lone_surrogate = (b"\x00\xd8" if encoding.endswith("le") else b"\xd8\x00") if "16" in encoding else None
    bad = lone_surrogate or (b"\x00\x00\x11\x00" if encoding.endswith("le") else b"\x00\x11\x00\x00")  # > U+10FFFF
    lines = [
        '{"id": "u", "text": "a \ufffd of its own"}\n'.encode(encoding),
        '{"id": "v", "text": "h'.encode(encoding) + bad + 'o"}\n'.encode(encoding),
        '{"id": "w", "text": "fine"}\n'.encode(encoding),
    ]
    records = tmp_path / "u.jsonl"
    records.write_bytes(bom + b"".join(lines))
    docs = list(iter_jsonl(str(records)))
    assert [(d.id, d.text, d.error) for d in docs] == [
        ("u", "a \ufffd of its own", None),
        ("v", "h\ufffdo", None),
        ("w", "fine", None),
    ]
    assert docs[0].warning is None and docs[2].warning is None
    label = encoding[:6].upper()
    assert docs[1].warning == (
        f"line 2 of {records} is not valid {label} (first bad character at offset 22); bad units were replaced."
    )


def test_closed_stdin_is_an_error_record(offline_hub, tmp_path):
    saved = sys.stdin
    sys.stdin = None
    try:
        [doc] = list(iter_paths(["-"]))
    finally:
        sys.stdin = saved
    assert doc.error == "stdin is closed; there is nothing to read."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_byte_order_marked_text_is_decoded_and_bad_units_are_warned_about(offline_hub, encoding):
    text, error, warning = decode_text("Plants grow.".encode(encoding), "the file")
    assert (text, error, warning) == ("Plants grow.", None, None)
    text, error, warning = decode_text("Plants grow.".encode(encoding) + b"\x00\xd8", "the file")  # a cut unit
    assert text.startswith("Plants grow.") and error is None and f"not valid {encoding.upper()}" in warning


def test_inline_text_with_lone_surrogates_from_python_is_replaced_with_a_warning(offline_hub):
    [doc] = list(Inputs(texts=["a \ud800 b"]).open())
    assert doc.text == "a \ufffd b" and doc.error is None and "--text number 0 is not valid UTF-8" in doc.warning


def test_folder_walk_follows_links_once_and_reports_what_it_cant_read(offline_hub, tmp_path, monkeypatch):
    """A linked folder was skipped, and an unreadable subfolder or a link to nothing vanished silently."""
    (tmp_path / "in" / "locked").mkdir(parents=True)
    (tmp_path / "ext").mkdir()
    (tmp_path / "in" / "own.txt").write_text("own")
    (tmp_path / "in" / "locked" / "l.txt").write_text("locked")
    (tmp_path / "ext" / "e.txt").write_text("linked")
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "ext")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")  # a folder already read: not again, not without end
    (tmp_path / "in" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    locked = str(tmp_path / "in" / "locked")

    def refusing(list_folder):
        def guarded(path=".", *args):
            if os.fspath(path) == locked:  # as a folder of mode 000 is for anyone but root
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return list_folder(path, *args)

        return guarded

    monkeypatch.setattr(os, "scandir", refusing(os.scandir))
    monkeypatch.setattr(os, "listdir", refusing(os.listdir))
    docs = {d.id: (d.text, d.error) for d in iter_paths([str(tmp_path / "in")])}
    assert docs == {
        "gone.txt": ("", f"it is a link to {tmp_path / 'nowhere.txt'}, which does not exist."),
        "linked/e.txt": ("linked", None),
        "locked": ("", "the folder could not be read: Permission denied."),
        "own.txt": ("own", None),
    }


def test_messages_say_what_a_user_needs(bigbird, tiny_models, tmp_path):
    model = str(tiny_models["classify"])
    (tmp_path / "blank.txt").write_text("  \n\n\t\n")
    [record] = jsonl(bigbird("classify", tmp_path / "blank.txt", "-m", model, "-q", check_rc=1).stdout)
    assert record["error"].endswith("has no text, only whitespace.")

    # A folder as --jsonl: exit 2 before the model loads (the model named does not exist).
    folder = bigbird("classify", "--jsonl", tmp_path, "-m", tmp_path / "no-model", check_rc=2)
    assert (
        folder.stderr.decode() == f"error: --jsonl {tmp_path} is a folder; give a JSONL file, or the folder as a"
        " path (its files).\n"
    )

    # A null id: the record gets the line's id, and says so.
    records = tmp_path / "ids.jsonl"
    records.write_text(json.dumps({"id": None, "text": BAKER}) + "\n")
    result = bigbird("classify", "--jsonl", "-", "-m", model, input=records.read_bytes(), check_rc=0)
    [record] = jsonl(result.stdout)
    assert record["id"] == "stdin:1" and "its 'id' field is null; its id is stdin:1." in record["warning"]
    assert "its 'id' field is null" in result.stderr.decode()

    # --split on a single file, which has none: said, and the rows read.
    table = tmp_path / "rows.csv"
    table.write_text("id,text\n1," + BAKER + "\n")
    result = bigbird("classify", "--dataset", table, "--split", "test", "-m", model, check_rc=0)
    assert f"--split test: {table} is a single file, which has no splits" in result.stderr.decode()
