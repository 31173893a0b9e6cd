"""A fuzz of the input side: random bytes as files and file names, random JSONL lines and fields.

Whatever comes in, the readers, the id rules and the writer must give exactly one record per input document,
every output line valid JSON, and no exception. Most examples drive the runner with a fake task (fast); one
variant goes through the real command on a tiny model with a handful of examples.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from conftest import jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bigbird.tasks.documents import Inputs
from bigbird.tasks.records import make_record
from bigbird_cli.app import app
from bigbird_cli.engines.local import local_engine
from bigbird_cli.jsonl import open_jsonl
from bigbird_cli.runner import run

FILE_NAMES = (
    st.binary(min_size=1, max_size=10)
    .filter(lambda b: b"/" not in b and b"\0" not in b and b.lstrip(b"."))  # all dots would name a hidden ".txt"
    .map(lambda b: b.lstrip(b".") + b".txt")
)
FILES = st.lists(st.tuples(FILE_NAMES, st.binary(max_size=64)), max_size=5, unique_by=lambda item: item[0])
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20), st.lists(st.integers())
)
RECORDS = st.fixed_dictionaries(
    {}, optional={"id": JSON_VALUES, "text": st.one_of(st.text(max_size=40), JSON_VALUES), "question": JSON_VALUES}
)
# A JSONL line: a JSON value (mostly records), or raw bytes that may not be JSON or UTF-8 at all.
LINES = st.one_of(
    RECORDS.map(lambda r: json.dumps(r).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ")),
)


class EchoTask:
    """Stands in for a model: one record per document, carrying its text (which the writer must cope with)."""

    model_name = "echo"

    def __call__(self, docs, size):
        return [make_record(d, "echo", input_tokens=len(d.text), truncated=False, chunks=1, text=d.text) for d in docs]


def write_inputs(root: Path, files, lines) -> tuple[Path, Path]:
    folder = root / "in"
    folder.mkdir()
    for name, data in files:
        with open(os.path.join(os.fsencode(folder), name), "wb") as handle:
            handle.write(data)
    records = root / "records.jsonl"
    records.write_bytes(b"\n".join(lines) + b"\n")
    return folder, records


def misnamed_text_field(lines) -> bool:
    """Whether the field check refuses the records before the model loads: some record has fields, and none of
    them is 'text' (the command reads all of these few records ahead)."""
    lines = [lines[0].removeprefix(b"\xef\xbb\xbf"), *lines[1:]] if lines else lines
    keyed = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record:
            keyed.append(record)
    return bool(keyed) and not any("text" in record for record in keyed)


def expected_count(files, lines) -> int:
    """One record per file, and per JSONL line with content: the reader drops a UTF-8 byte-order mark that opens
    the file (Windows editors write one), so a first line of nothing else holds no record."""
    lines = [lines[0].removeprefix(b"\xef\xbb\xbf"), *lines[1:]] if lines else lines
    return len(files) + sum(1 for line in lines if line.strip())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=FILES, lines=st.lists(LINES, max_size=6), batch_size=st.integers(1, 3))
def test_every_input_document_becomes_exactly_one_valid_record(files, lines, batch_size):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder, records = write_inputs(root, files, lines)
        out = root / "out.jsonl"
        docs = Inputs(paths=[str(folder)], jsonl=[str(records)], extra_fields=("question",)).open()
        with open_jsonl(out) as writer:
            stats = run(local_engine(EchoTask(), batch_size), docs, writer)
        written = jsonl(out)  # every line whole, valid JSON
        assert len(written) == expected_count(files, lines) == stats.ok + stats.failed
        path_ids = [r["id"] for r in written[: len(files)]]
        assert len(set(path_ids)) == len(path_ids)
        assert all(isinstance(r["id"], str) and (("error" in r) != ("text" in r)) for r in written)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(files=FILES, lines=st.lists(LINES, max_size=3))
def test_the_classify_command_survives_random_inputs(tiny_models, hf_home, files, lines):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder, records = write_inputs(root, files, lines)
        out = root / "out.jsonl"
        env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
        args = ["classify", str(folder), "--jsonl", str(records), "-m", str(tiny_models["classify"]), "-o", str(out)]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert result.exit_code in (0, 1, 2) and "Traceback" not in result.output
        if misnamed_text_field(lines):  # a wrong field name is one sentence before the model loads
            assert result.exit_code == 2 and "'text' field; records have:" in result.output, result.output
            return
        if result.exit_code == 2:  # nothing readable at all: no document, so no output either
            assert expected_count(files, lines) == 0 or "hold no documents" in result.output
            return
        written = jsonl(out)
        assert len(written) == expected_count(files, lines)
        assert result.exit_code == (1 if any("error" in r for r in written) else 0)
