"""Documents and the readers that turn the CLI's inputs into them.

Every input kind (files, folders, stdin, inline text, JSONL records, dataset rows) becomes the same small
`Document`, so the tasks and the batch loop never care where text came from. A document that cannot be read
(an empty or binary file, a file that vanished, a malformed JSONL line, a missing field) is still yielded, with
`error` set to a one-sentence reason: one bad input must become one error record, never stop the batch.
"""

from __future__ import annotations

import codecs
import collections
import io
import itertools
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

DEFAULT_GLOBS: tuple[str, ...] = ("*.txt", "*.md")
# A NUL byte in the first few kilobytes is how grep and git tell binary files from text.
BINARY_SNIFF_BYTES = 8192


@dataclass
class Document:
    """One unit of work: an id for the output record, where it came from, and its text.

    `error` marks a document that could not be read (its record will carry the error instead of results);
    `warning` marks one that was read with a caveat (invalid UTF-8 replaced). `fields` holds extra per-document
    inputs a task may use, such as a JSONL record's `question`.
    """

    id: str
    source: str
    text: str = ""
    error: str | None = None
    warning: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    # The field names of the record it was read from (a JSONL line's keys, a dataset row's columns); None for a
    # file, stdin or --text. What a wrong --text-field is told it could have been.
    keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Ids and sources end up in UTF-8 JSON and on the terminal: a name that isn't valid UTF-8 (a file name's
        # undecodable bytes, a lone surrogate from JSON) must stay writable, or one name would stop the run.
        self.id, self.source = printable(self.id), printable(self.source)


class InputError(Exception):
    """An input that cannot be opened at all (a dataset that can't be loaded): a usage error, not a bad document."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message without its final period ('' when it has none), for building
    the one-sentence reasons that error records and usage errors carry."""
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def piped_stdin() -> bool | None:
    """Whether stdin is a pipe or a redirected file that holds data (True) or is empty (False); None when it is
    neither (a terminal, /dev/null, closed, or a test's stand-in), so `cat report.txt | bigbird summarize` reads
    it as `jq` would, and a batch job whose stdin is /dev/null does not. Peeking consumes nothing."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return None
    peek = getattr(sys.stdin.buffer, "peek", None)
    return True if peek is None else bool(peek(1))


def describe(exc: BaseException) -> str:
    """An exception as one sentence without its final period: its first line, or its type when it has none."""
    return first_line(exc) or type(exc).__name__


def printable(text: str) -> str:
    """`text` with anything UTF-8 can't carry escaped: a file name's undecodable bytes as `\\xe9` (as `ls -b`
    shows them), other lone surrogates as `\\udXXX`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def clean_value(value: Any) -> Any:
    """A field's value with lone surrogates replaced in its strings, lists and objects (a question, a text pair,
    answers): the tokenizer can't take them either."""
    if isinstance(value, str):
        return _clean_text(value, "")[0]
    if isinstance(value, list):
        return [clean_value(item) for item in value]
    if isinstance(value, dict):
        return {key: clean_value(item) for key, item in value.items()}
    return value


def _clean_text(text: str, what: str) -> tuple[str, str | None]:
    """Text from JSON can hold lone surrogates (`"\\ud800"`), which no tokenizer or UTF-8 writer takes: they are
    replaced, with the same warning as invalid UTF-8 in a file."""
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError as exc:
        clean = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
        return clean, f"{what} is not valid UTF-8 (first bad character at offset {exc.start}); it was replaced."


# Bytes → text -------------------------------------------------------------------------------------------------


def decode_text(data: bytes, what: str) -> tuple[str, str | None, str | None]:
    """Decode raw bytes as UTF-8 and return `(text, error, warning)`.

    Binary data and empty input are errors. Invalid UTF-8 is decoded with replacement characters and a
    warning, since a few bad bytes in an otherwise good text file should not cost the whole document.
    """
    marked = _marked_encoding(data)
    if marked is not None:
        return _decode_marked(data, marked, what)
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return "", f"{what} looks like a binary file (it contains NUL bytes), not text.", None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is not part of the text
    warning = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        warning = f"{what} is not valid UTF-8 (first bad byte at offset {exc.start}); bad bytes were replaced."
    if not text.strip():
        return "", blank(what, text), None
    return text, None, warning


def blank(what: str, text: str) -> str:
    """Why a text without words fails: empty, or only whitespace (a file of blank lines is not "empty" to whoever
    looks at its size)."""
    return f"{what} is empty." if not text else f"{what} has no text, only whitespace."


# Byte-order marks of the encodings read besides UTF-8 (Windows editors write UTF-16). UTF-32's come first:
# FF FE starts both little-endian marks.
BYTE_ORDER_MARKS = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


# What a bad unit of a UTF-16 or UTF-32 line decodes to while it is read: a lone surrogate, which no valid unit of
# either decodes to, so the line can tell replaced units from a U+FFFD of its own.
BAD_UNIT = "\udcff"
BAD_UNIT_HANDLER = "bigbird-cli-mark-bad-units"
codecs.register_error(BAD_UNIT_HANDLER, lambda error: (BAD_UNIT, error.end))  # type: ignore[attr-defined]


def _marked_encoding(head: bytes) -> str | None:
    """The encoding whose byte-order mark `head` starts with, or None (UTF-8, with or without its own mark)."""
    return next((encoding for mark, encoding in BYTE_ORDER_MARKS.items() if head.startswith(mark)), None)


def _decode_marked(data: bytes, encoding: str, what: str) -> tuple[str, str | None, str | None]:
    """Text with a UTF-16 or UTF-32 byte-order mark: bad units replaced, with a warning as for UTF-8."""
    warning = None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        text = data.decode(encoding, errors="replace")
        label = encoding.upper()
        warning = f"{what} is not valid {label} (first bad byte at offset {exc.start}); bad bytes were replaced."
    if not text.strip():
        return "", blank(what, text), None
    return text, None, warning


def read_file(path: Path, doc_id: str) -> Document:
    """Read one text file into a Document; any failure becomes the document's error."""
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if path.is_symlink():
            return Document(doc_id, source, error=f"it is a link to {os.readlink(path)}, which does not exist.")
        return Document(doc_id, source, error="the file does not exist (it may have been moved or deleted).")
    except IsADirectoryError:
        try:
            os.listdir(path)
        except OSError as exc:  # a folder under an input folder that could not be listed: its files are missing
            return Document(doc_id, source, error=f"the folder could not be read: {exc.strerror or exc}.")
        return Document(doc_id, source, error="it is a directory, not a file.")
    except OSError as exc:
        return Document(doc_id, source, error=f"the file could not be read: {exc.strerror or exc}.")
    text, error, warning = decode_text(data, "the file")
    return Document(doc_id, source, text, error=error, warning=warning)


def read_stream(stream: BinaryIO, doc_id: str = "stdin", source: str = "stdin") -> Document:
    """Read a whole byte stream (stdin) as one Document."""
    text, error, warning = decode_text(stream.read(), source)
    return Document(doc_id, source, text, error=error, warning=warning)


# Paths ------------------------------------------------------------------------------------------------------


def folder_files(folder: Path, globs: Sequence[str]) -> list[Path]:
    """Files under `folder` (recursively) whose names match any of `globs`, in a stable sorted order.

    Sorting by the relative path makes the document order (and so the records' order) the same on every machine.
    Hidden files and folders (names starting with a dot) are skipped, so `.git` never becomes input. Linked
    folders are followed (each real folder once, so a link loop ends). What can't be read is listed too, so
    that it becomes an error record rather than missing silently: a subfolder that could not be listed, and a
    matching link to nothing.
    """
    found: set[Path] = set()
    seen: set[tuple[int, int]] = set()

    def unlisted(error: OSError) -> None:
        if error.filename is not None:
            found.add(Path(error.filename))

    for root, dirs, files in os.walk(folder, onerror=unlisted, followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root, name)
            rel = path.relative_to(folder)
            if name.startswith(".") or not any(rel.match(pattern) for pattern in globs):
                continue
            if path.is_file() or (path.is_symlink() and not path.exists()):
                found.add(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def iter_paths(
    paths: Sequence[str], globs: Sequence[str] = DEFAULT_GLOBS, stdin: BinaryIO | None = None
) -> Iterator[Document]:
    """Documents for positional PATHS: a file is one document, a folder is every matching file under it,
    `-` is all of stdin as one document.

    Ids are the file path as given, the path relative to the folder given, or `stdin`. A relative path that two
    folders given both hold names neither: both files take their path as read, so an id never depends on the
    order of the folders (a run resumed with them in another order would skip the wrong file).
    """
    listed = {given: folder_files(Path(given), globs) for given in paths if given != "-" and Path(given).is_dir()}
    names = collections.Counter(file.relative_to(given).as_posix() for given, files in listed.items() for file in files)
    for given in paths:
        if given == "-":
            if stdin is None and sys.stdin is None:  # started with stdin closed (`<&-`)
                yield Document("stdin", "stdin", error="stdin is closed; there is nothing to read.")
                continue
            yield read_stream(stdin if stdin is not None else sys.stdin.buffer)
            continue
        path = Path(given)
        if given in listed:
            # An empty folder yields nothing; the caller reports "no input" if nothing else came either.
            for file in listed[given]:
                name = file.relative_to(path).as_posix()
                yield read_file(file, str(file) if names[name] > 1 else name)
        else:
            yield read_file(path, given)


def iter_texts(texts: Sequence[str]) -> Iterator[Document]:
    """Documents for `--text` strings, with ids `text:0`, `text:1`, ..."""
    for i, given in enumerate(texts):
        # A shell argument's bytes that are not UTF-8 reach Python as lone surrogates, as JSON's "\ud800" does.
        text, warning = _clean_text(given, f"--text number {i}")
        doc = Document(f"text:{i}", "--text", text, warning=warning)
        if not text.strip():
            doc.error = blank(f"--text number {i}", text)
        yield doc


# Records (JSONL lines, dataset rows) -------------------------------------------------------------------------


def record_document(
    record: Any, fallback_id: str, source: str, text_field: str, id_field: str, extra_fields: Sequence[str]
) -> Document:
    """Turn one JSON object / dataset row into a Document, checking the fields it must have."""
    if not isinstance(record, dict):
        return Document(fallback_id, source, error=f"the record is {_json_kind(record)}, not an object.")
    raw_id = record.get(id_field)
    doc_id = fallback_id if raw_id is None or raw_id == "" else str(raw_id)
    fields = {name: clean_value(record[name]) for name in extra_fields if record.get(name) is not None}
    keys = tuple(str(key) for key in record)
    text = record.get(text_field)
    if text is None:
        error = f"the record has no {text_field!r} field."
        return Document(doc_id, source, error=error, fields=fields, keys=keys)
    if not isinstance(text, str):
        error = f"field {text_field!r} is {_json_kind(text)}, not a string."
        return Document(doc_id, source, error=error, keys=keys)
    if not text.strip():
        return Document(doc_id, source, error=blank(f"field {text_field!r}", text), fields=fields, keys=keys)
    text, warning = _clean_text(text, f"field {text_field!r}")
    if id_field in record and doc_id == fallback_id:  # a null or "" id: say which id the record got instead
        given = "null" if raw_id is None else "empty"
        warning = " ".join(filter(None, [warning, f"its {id_field!r} field is {given}; its id is {fallback_id}."]))
    return Document(doc_id, source, text, warning=warning, fields=fields, keys=keys)


# Documents read ahead before the model loads, to tell a wrong field name from a few records that lack it.
FIELD_CHECK_RECORDS = 10


def check_record_fields(docs: Iterator[Document], required: Sequence[str]) -> Iterator[Document]:
    """The same documents, after reading up to FIELD_CHECK_RECORDS documents ahead: when none of them has one of
    the `required` fields, InputError saying which fields they do have, so a wrong --text-field is one sentence
    before the model loads, not one error record per record. A CSV's header shows as read (`id;text` as one
    field says the file is not comma-separated)."""
    if not required:
        return docs
    ahead: list[Document] = []
    unseen = set(required)
    # Read ahead only while a field is still unseen: a stream whose first record has them all (the usual case) is
    # read no further than before, so a pipe still being written is never waited on for more records.
    for doc in docs:
        ahead.append(doc)
        if doc.keys is not None:
            unseen.difference_update(doc.keys)
        if not unseen or len(ahead) == FIELD_CHECK_RECORDS:
            break
    # Only records with fields say what the fields are called: an empty object is one bad record, not a wrong name.
    seen = [doc.keys for doc in ahead if doc.keys]
    for name in dict.fromkeys(required):
        if seen and not any(name in keys for keys in seen):
            have = ", ".join(dict.fromkeys(key for keys in seen for key in keys))
            some = "the only record has no" if len(seen) == 1 else f"none of the first {len(seen)} records has a"
            raise InputError(f"{some} {name!r} field; records have: {have}")
    return itertools.chain(ahead, docs)


def _json_kind(value: Any) -> str:
    """A JSON value's kind with its article, for messages ("a number", not "a int")."""
    kinds = {bool: "true or false", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), f"a {type(value).__name__}")


def iter_jsonl(
    name: str,
    text_field: str = "text",
    id_field: str = "id",
    extra_fields: Sequence[str] = (),
    stdin: BinaryIO | None = None,
    split: str | None = None,
) -> Iterator[Document]:
    """Documents from a JSONL file (or `-` for stdin), one per non-blank line.

    A line that is not valid JSON, or lacks the text field, becomes an error document with id `<file>:<line>`
    (or the record's id where it has one). A file that cannot be opened is one error document. With `split`
    (a --dataset file), rows are named as dataset rows are: `<split>:<row>`, from 0.
    """
    label = "stdin" if name == "-" else name
    if name == "-":
        if stdin is None and sys.stdin is None:  # started with stdin closed (`<&-`)
            yield Document(label, label, error="stdin is closed; there is nothing to read.")
            return
        stream: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        yield from _jsonl_lines(stream, label, text_field, id_field, extra_fields, split)
        return
    try:
        handle = open(name, "rb")
    except OSError as exc:
        yield Document(label, label, error=f"{name} could not be opened: {exc.strerror or exc}.")
        return
    with handle:
        yield from _jsonl_lines(handle, label, text_field, id_field, extra_fields, split)


def _utf8_lines(stream: BinaryIO) -> Iterator[tuple[bytes, str | None]]:
    """The stream's lines as UTF-8 bytes, each with what was wrong with it (None, or why units were replaced).

    A UTF-16 or UTF-32 file (with its byte-order mark) is decoded line by line; its bad units become U+FFFD and
    the line says so, as an invalid UTF-8 line does. UTF-8 lines are checked by the caller.
    """
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    encoding = _marked_encoding(stream.peek(4)[:4])  # type: ignore[attr-defined]
    if encoding is None:
        for raw in stream:
            yield raw, None
        return
    text = io.TextIOWrapper(stream, encoding=encoding, errors=BAD_UNIT_HANDLER, newline="\n")  # "\r": JSON space
    for line in text:
        line, problem = line.removeprefix("\ufeff"), None
        if BAD_UNIT in line:
            offset = line.index(BAD_UNIT)
            problem = f"not valid {encoding.upper()} (first bad character at offset {offset}); bad units were replaced"
            line = line.replace(BAD_UNIT, "\ufffd")
        yield line.encode("utf-8"), problem


def _jsonl_lines(
    stream: BinaryIO, label: str, text_field: str, id_field: str, extra_fields: Sequence[str], split: str | None
) -> Iterator[Document]:
    row = 0
    for lineno, (raw, problem) in enumerate(_utf8_lines(stream), start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark (Windows editors) is not part of the first record
        if not raw.strip():
            continue
        where = f"{label}:{lineno}" if split is None else f"{label}[{split}]:{row}"
        fallback = where if split is None else f"{split}:{row}"
        row += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.decode("utf-8", errors="replace")
            problem = f"not valid UTF-8 (first bad byte at offset {exc.start}); bad bytes were replaced"
        warning = problem and f"line {lineno} of {label} is {problem}."
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            yield Document(fallback, where, error=f"line {lineno} of {label} is not valid JSON ({reason}).")
            continue
        doc = record_document(record, fallback, where, text_field, id_field, extra_fields)
        if warning and doc.error is None:
            doc.warning = " ".join(filter(None, [warning, doc.warning]))
        yield doc


# Datasets ---------------------------------------------------------------------------------------------------

# Local file suffix → the `datasets` builder that reads it.
DATASET_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def load_dataset_stream(name_or_path: str, split: str) -> Iterable[Any]:
    """Open a dataset for streaming with the `datasets` library: a local json/csv/parquet/text file or folder,
    or a Hub dataset id. Streaming reads rows as they are needed instead of loading the whole set.

    Raises InputError with one sentence when it cannot be opened (missing file, unknown split, offline).
    """
    import datasets  # imported here: it takes a second or two, and most runs don't need it

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    path = Path(name_or_path).expanduser()
    if not path.exists() and _looks_like_a_path(name_or_path):
        # Without this, `datasets` takes a misspelt file name for a Hub id and retries the network for half a minute.
        raise InputError(f"dataset file {name_or_path} does not exist.")
    try:
        if path.is_file():
            builder = DATASET_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise InputError(
                    f"{name_or_path}: unknown dataset file type {path.suffix!r}; "
                    f"use one of {', '.join(sorted(DATASET_BUILDERS))}."
                )
            options = _csv_as_text(path, datasets) if builder == "csv" else {}
            return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, streaming=True, **options)
        return datasets.load_dataset(name_or_path, split=split, streaming=True)
    except InputError:
        raise
    except Exception as exc:  # datasets raises many kinds (FileNotFoundError, ConnectionError, ValueError, ...)
        raise InputError(f"dataset {name_or_path!r} (split {split!r}) could not be opened: {describe(exc)}.") from exc


def _csv_as_text(path: Path, datasets: Any) -> dict[str, Any]:
    """Read every CSV column as the text it is: left to pandas, ids `007` and `7` both became `7`, a column with
    one blank cell turned ids into `1.0`, and texts such as `NA` or `null` became missing."""
    import pandas  # the reader `datasets` uses for CSV: the column names as it will see them (BOM, blank cells)

    try:
        header = [str(name) for name in pandas.read_csv(path, nrows=0).columns]
    except Exception:  # an empty or unreadable file: `datasets` reports it, as for any other file
        header = []
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"keep_default_na": False, "features": features} if header else {"keep_default_na": False}


def _looks_like_a_path(name: str) -> bool:
    """A dataset name that can only mean a local file or folder: an explicit path, or a data file's suffix."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or Path(name).suffix.lower() in DATASET_BUILDERS


def iter_dataset(
    name_or_path: str,
    split: str = "train",
    text_field: str = "text",
    id_field: str = "id",
    extra_fields: Sequence[str] = (),
    rows: Iterable[Any] | None = None,
) -> Iterator[Document]:
    """Documents from dataset rows; ids come from the id field, or `<split>:<row number>` without one.

    `rows` lets a caller pass an already-opened stream (so the dataset is opened, and any error raised, before
    the model loads); otherwise the dataset is opened here.
    """
    if rows is None:
        rows = load_dataset_stream(name_or_path, split)
    stream = iter(rows)
    for i in itertools.count():
        where = f"{name_or_path}[{split}]:{i}"
        try:
            row = next(stream)
        except StopIteration:
            return
        except Exception as exc:  # a malformed file: its parser can't go on past this row
            reason = f"the dataset can't be read from row {i} on ({describe(exc)}); the rows after it are not read."
            yield Document(f"{split}:{i}", where, error=reason)
            return
        yield record_document(row, f"{split}:{i}", where, text_field, id_field, extra_fields)


# All inputs together ----------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Everything a command was asked to read, in the order the documents are produced."""

    paths: Sequence[str] = ()
    texts: Sequence[str] = ()
    jsonl: Sequence[str] = ()
    dataset: str | None = None
    split: str = "train"
    globs: Sequence[str] = DEFAULT_GLOBS
    text_field: str = "text"
    id_field: str = "id"
    extra_fields: Sequence[str] = ()

    def is_empty(self) -> bool:
        return not (self.paths or self.texts or self.jsonl or self.dataset)

    def check(self) -> None:
        """InputError for what can't be read as asked, before any model loads: a folder given as --jsonl (read, it
        was one error record after the model loaded)."""
        for name in self.jsonl:
            if name != "-" and Path(name).is_dir():
                raise InputError(f"--jsonl {name} is a folder; give a JSONL file, or the folder as a path (its files)")

    def notes(self) -> list[str]:
        """What the user should hear about the inputs as given: a --split named for a single file, which has none
        (its rows are only named after it)."""
        if self.dataset and self.split != "train" and Path(self.dataset).expanduser().is_file():
            return [
                f"--split {self.split}: {self.dataset} is a single file, which has no splits; its rows are read"
                f" whole and named {self.split}:N."
            ]
        return []

    def missing(self) -> list[str]:
        """The paths and JSONL files given that don't exist: reported before a model loads (typos)."""
        return [name for name in [*self.paths, *self.jsonl] if name != "-" and not os.path.lexists(name)]

    def files(self) -> list[Path]:
        """Every file this run will read (folders expanded), so an output file can be checked against them."""
        found = []
        for name in [*self.paths, *self.jsonl]:
            path = Path(name)
            if name != "-":
                found.extend(folder_files(path, self.globs) if path.is_dir() else [path])
        if self.dataset and Path(self.dataset).is_file():
            found.append(Path(self.dataset))
        return found

    def open(self, stdin: BinaryIO | None = None) -> Iterator[Document]:
        """The documents of all inputs: paths, then --text, then JSONL files, then the dataset.

        The dataset is opened before the first document is produced, so a dataset that can't be had fails
        fast with InputError, before any model is loaded.
        """
        if sum(p == "-" for p in self.paths) + sum(j == "-" for j in self.jsonl) > 1:
            raise InputError("stdin can be read only once: give '-' as a path or as --jsonl, not both.")
        rows = load_dataset_stream(self.dataset, self.split) if self.dataset and not self._dataset_is_jsonl() else None
        return self._documents(rows, stdin)

    def _dataset_is_jsonl(self) -> bool:
        """A local .jsonl dataset is read as --jsonl is: a malformed line is that line's error record, where the
        `datasets` JSON reader fails on the whole block around it."""
        return bool(self.dataset) and Path(self.dataset).suffix.lower() == ".jsonl" and Path(self.dataset).is_file()

    def _documents(self, rows: Iterable[Any] | None, stdin: BinaryIO | None) -> Iterator[Document]:
        seen: set[str] = set()
        yield from _unique_ids(iter_paths(self.paths, self.globs, stdin), seen, rename=True)
        yield from _unique_ids(iter_texts(self.texts), seen, rename=True)
        for name in self.jsonl:
            records = iter_jsonl(name, self.text_field, self.id_field, self.extra_fields, stdin)
            yield from _unique_ids(records, seen, rename=False)
        if self.dataset and self._dataset_is_jsonl():
            records = iter_jsonl(self.dataset, self.text_field, self.id_field, self.extra_fields, split=self.split)
            yield from _unique_ids(records, seen, rename=False)
        elif self.dataset:
            rows_ = iter_dataset(self.dataset, self.split, self.text_field, self.id_field, self.extra_fields, rows=rows)
            yield from _unique_ids(rows_, seen, rename=False)


def _unique_ids(docs: Iterable[Document], seen: set[str], *, rename: bool) -> Iterator[Document]:
    """Make ids unique within a run, since `--resume` takes a repeated id for a document already done.

    An id we derived (a file name relative to its folder: `dupA/doc.txt` and `dupB/doc.txt` both give
    `doc.txt`) is renamed to the path as read, then numbered; an id the user chose (a JSONL or dataset id
    field) is theirs, so a repeat becomes an error record instead.
    """
    for doc in docs:
        if doc.id in seen:
            if not rename:
                doc.error = f"id {doc.id!r} was already used by an earlier document; ids must be unique."
                doc.text = ""
            else:
                candidates = itertools.chain([doc.source], (f"{doc.id}#{n}" for n in itertools.count(2)))
                doc.id = next(c for c in candidates if c not in seen)
        seen.add(doc.id)
        yield doc
