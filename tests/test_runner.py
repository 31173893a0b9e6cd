"""The batch loop with a fake task: order, bucketing, error isolation, shards, resume, and the JSONL writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import BAKER, MUSEUM, bigbird_executable, cli, cli_classify, jsonl, one_sentence

from bigbird.tasks import ClassifyTask
from bigbird.tasks.documents import Document
from bigbird.tasks.records import make_record
from bigbird_cli import runner
from bigbird_cli.engines.local import local_engine
from bigbird_cli.jsonl import JsonlWriter, compact_for_resume, open_jsonl
from bigbird_cli.runner import Shard, run


class FakeTask:
    """Upper-cases text; fails on documents containing 'boom' (the whole batch raises, as a model would)."""

    model_name = "fake"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, docs, size):
        self.batches.append([d.id for d in docs])
        if any("boom" in d.text for d in docs):
            raise RuntimeError("boom happened")
        return [
            make_record(d, "fake", input_tokens=len(d.text), truncated=False, chunks=1, out=d.text.upper())
            for d in docs
        ]


def docs_of(texts):
    return [Document(f"d{i}", "test", t) for i, t in enumerate(texts)]


def run_to_file(tmp_path, task, docs, name="out.jsonl", **kwargs):
    path = tmp_path / name
    with open_jsonl(path, resume=kwargs.pop("resume", False)) as writer:
        stats = run(local_engine(task, kwargs.pop("batch_size", 1)), docs, writer, **kwargs)
    return stats, [json.loads(line) for line in path.read_text().splitlines()]


def test_order_follows_input_and_batches_are_bucketed_by_length(tmp_path):
    texts = ["x" * n for n in (5, 1, 9, 2, 7, 3)]
    task = FakeTask()
    stats, records = run_to_file(tmp_path, task, docs_of(texts), batch_size=2)
    assert [r["id"] for r in records] == [f"d{i}" for i in range(6)]
    assert [r["out"] for r in records] == [t.upper() for t in texts]
    assert task.batches == [["d1", "d3"], ["d5", "d0"], ["d4", "d2"]]
    assert (stats.ok, stats.failed, stats.exit_code) == (6, 0, 0)


def test_a_failing_document_becomes_an_error_record_and_its_batch_mates_succeed(tmp_path):
    docs = docs_of(["fine", "boom", "also fine"])
    docs.append(Document("unreadable", "test", error="it is empty."))
    stats, records = run_to_file(tmp_path, FakeTask(), docs, batch_size=4)
    assert [r["id"] for r in records] == ["d0", "d1", "d2", "unreadable"]
    assert records[0]["out"] == "FINE" and records[2]["out"] == "ALSO FINE"
    assert records[1]["error"] == "RuntimeError: boom happened." and "out" not in records[1]
    assert records[3]["error"] == "it is empty."
    for record in records:
        assert {"id", "source", "model", "input_tokens", "truncated", "chunks"} <= set(record)
    assert (stats.ok, stats.failed, stats.exit_code) == (2, 2, 1)


class StreamingTask(FakeTask):
    """Keeps its own batch full (as summarize does): takes whole buckets, and yields records as they are done, here
    last document first; fails mid-bucket on a 'boom' document."""

    streams = True

    def __init__(self) -> None:
        super().__init__()
        self.streams_given: list[list[str]] = []

    def stream(self, docs, size):
        self.streams_given.append([d.id for d in docs])
        for i in reversed(range(len(docs))):
            if "boom" in docs[i].text:
                raise RuntimeError("boom happened")
            yield i, self([docs[i]], size)[0]


def test_a_streaming_task_gets_whole_buckets_and_its_records_are_written_in_input_order(tmp_path):
    texts = ["x" * n for n in (5, 1, 9, 2, 7, 3)]
    task = StreamingTask()
    docs = [*docs_of(texts), Document("unreadable", "test", error="it is empty.")]
    stats, records = run_to_file(tmp_path, task, docs, batch_size=2)
    assert [r["id"] for r in records] == [*(f"d{i}" for i in range(6)), "unreadable"]
    assert [r["out"] for r in records[:6]] == [t.upper() for t in texts]
    assert task.streams_given == [[f"d{i}" for i in range(6)]]  # the readable documents, in input order
    assert (stats.ok, stats.failed) == (6, 1)


def test_a_stream_that_raises_keeps_its_records_and_retries_the_rest_one_at_a_time(tmp_path):
    task = StreamingTask()
    stats, records = run_to_file(tmp_path, task, docs_of(["a", "boom", "c", "d"]), batch_size=2)
    assert [r.get("out", r.get("error")) for r in records] == ["A", "RuntimeError: boom happened.", "C", "D"]
    # d and c were done before the failure; a and the bad one are retried alone.
    assert task.batches == [["d3"], ["d2"], ["d0"], ["d1"]]
    assert (stats.ok, stats.failed) == (3, 1)


def test_shards_cover_the_input_exactly_once():
    docs = docs_of([str(i) for i in range(10)])
    seen = [d.id for i in range(3) for d in Shard(i, 3).select(docs)]
    assert sorted(seen) == sorted(d.id for d in docs) and len(seen) == len(docs)
    assert all(len(list(Shard(i, 3).select(docs))) for i in range(3))  # each shard has work
    # A document added before the others moves none of them (by position, every later one changed shard).
    added = [Document("new", "new", "new text"), *docs]
    assert {d.id: i for i in range(3) for d in Shard(i, 3).select(added) if d.id != "new"} == {
        d.id: i for i in range(3) for d in Shard(i, 3).select(docs)
    }
    assert Shard.parse("2/3") == Shard(2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_resume_skips_done_ids_and_retries_errors(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(
        json.dumps({"id": "d0", "out": "X"})
        + "\n"
        + json.dumps({"id": "d1", "error": "bad"})
        + "\n"
        + '{"id": "d2", "ou'
    )
    done = compact_for_resume(path)
    assert done == {"d0"}
    task = FakeTask()
    stats, records = run_to_file(tmp_path, task, docs_of(["x", "y", "z"]), resume=True, skip_ids=done)
    assert [r["id"] for r in records] == ["d0", "d1", "d2"] and "error" not in records[1]
    assert stats.skipped == 1 and stats.ok == 2


def test_a_whole_record_cut_before_its_newline_is_redone_not_lost(tmp_path):
    """What --resume skips is exactly what it keeps: a last line without its newline is neither."""
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"id": "d0", "out": "X"}) + "\n" + json.dumps({"id": "d1", "out": "Y"}))
    done = compact_for_resume(path)
    assert done == {"d0"}
    stats, records = run_to_file(tmp_path, FakeTask(), docs_of(["x", "y"]), resume=True, skip_ids=done)
    assert [r["id"] for r in records] == ["d0", "d1"] and (stats.skipped, stats.ok) == (1, 1)


def test_compact_keeps_a_clean_file_untouched(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n')
    before = path.stat().st_mtime_ns
    compact_for_resume(path)
    assert path.stat().st_mtime_ns == before


def test_compacting_a_hard_linked_output_says_the_links_keep_the_old_file(tmp_path, capsys):
    """The rewrite goes through a new file renamed into place: another name for the old one is left behind."""
    path, other = tmp_path / "out.jsonl", tmp_path / "other-name.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "error": "x"}\n')
    other.hardlink_to(path)
    assert compact_for_resume(path) == {"a"}
    assert path.read_text() == '{"id": "a"}\n' and "other hard links" in capsys.readouterr().err
    compact_for_resume(other)  # a single name now: nothing to say
    assert "hard links" not in capsys.readouterr().err


def test_writer_writes_whole_unicode_lines(tmp_path):
    path = tmp_path / "w.jsonl"
    with JsonlWriter(open(path, "wb"), close=True) as writer:
        writer.write({"id": "é", "text": "ünï\ncode"})
    assert path.read_text(encoding="utf-8") == '{"id": "é", "text": "ünï\\ncode"}\n'


@pytest.mark.parametrize(
    ("stderr_tty", "stdout_tty", "output", "shown"),
    [
        (True, False, None, True),
        (True, True, None, False),
        (True, True, "out.jsonl", True),
        (False, False, None, False),
    ],
)
def test_live_progress_stays_out_of_records_on_the_same_terminal(monkeypatch, stderr_tty, stdout_tty, output, shown):
    """Records written to the terminal the progress line is redrawn on came out as `⠙ 0 documents{"id": ...`."""
    from bigbird_cli import runner

    monkeypatch.setattr(type(runner.console), "is_terminal", property(lambda self: stderr_tty))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: stdout_tty)
    common = SimpleNamespace(quiet=False, output=None if output is None else Path(output))
    assert runner.live_progress(common) is shown


def test_resume_keeps_the_error_record_of_a_repeated_id(offline_hub, tiny_models, tmp_path):
    """The first "a" is done, so --resume skips it; the second "a" is no document of its own to skip, and its error
    record (dropped with the other errors when the file is compacted) is written again."""
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n{"id": "b", "text": "three"}\n')
    out = tmp_path / "out.jsonl"
    assert cli_classify(tiny_models, "--jsonl", path, "-o", out).exit_code == 1
    first = jsonl(out)
    assert [(r["id"], "error" in r) for r in first] == [("a", False), ("a", True), ("b", False)]
    result = cli("classify", "-m", tiny_models["classify"], "--jsonl", path, "-o", out, "--resume")
    assert result.exit_code == 1, result.output
    assert "0 done, 1 failed, 2 skipped" in result.output
    again = jsonl(out)
    assert sorted(json.dumps(r, sort_keys=True) for r in again) == sorted(json.dumps(r, sort_keys=True) for r in first)


def test_output_naming_an_input_is_refused_before_it_is_opened(offline_hub, tiny_models, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first")
    b.write_text("second")
    result = cli_classify(tiny_models, a, b, "-o", b)
    assert result.exit_code == 2 and "is also an input" in result.output and one_sentence(result.output)
    assert b.read_text() == "second"
    # A hard link to an input: it emptied the input, and a --jsonl one was read back without end.
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"id": "r", "text": "Plants grow."}) + "\n")
    for source, option in ((a, ()), (records, ("--jsonl",))):
        link = tmp_path / f"{source.stem}-hard.jsonl"
        os.link(source, link)
        result = cli_classify(tiny_models, *option, source, "-o", link)
        assert result.exit_code == 2 and "is also an input" in result.output
    assert a.read_text() == "first" and jsonl(records) == [{"id": "r", "text": "Plants grow."}]
    # A new file inside an input folder would be read back as a document.
    result = cli_classify(tiny_models, tmp_path, "-o", tmp_path / "out.txt")
    assert result.exit_code == 2 and not (tmp_path / "out.txt").exists()


def test_missing_inputs_are_reported_before_the_model_loads(offline_hub, tiny_models, tmp_path):
    result = cli("classify", "-m", tmp_path / "no-model", tmp_path / "typo.txt")
    assert result.exit_code == 2 and "typo.txt does not exist" in result.output and one_sentence(result.output)
    result = cli("classify", "-m", tmp_path / "no-model", "--dataset", "./no-such-file.csv")
    assert result.exit_code == 2 and "does not exist" in result.output and one_sentence(result.output)
    good = tmp_path / "good.txt"
    good.write_text("A good document.")
    out = tmp_path / "out.jsonl"
    result = cli("classify", "-m", tiny_models["classify"], good, tmp_path / "typo.txt", "-o", out)
    assert result.exit_code == 1 and "warning:" in result.output.split("\n")[0]
    assert ["error" in r for r in jsonl(out)] == [False, True]


def test_output_that_stdin_reads_from_is_refused(offline_hub, tiny_models, tmp_path):
    """`--jsonl - -o in.jsonl < in.jsonl` read its own records back without end, filling the disk."""
    import subprocess

    records = tmp_path / "in.jsonl"
    records.write_text('{"id": "a", "text": "one"}\n')
    with open(records, "rb") as stdin:
        done = subprocess.run(
            [bigbird_executable(), "classify", "--jsonl", "-", "-m", tiny_models["classify"], "-o", records],
            stdin=stdin,
            capture_output=True,
            timeout=120,
        )
    assert done.returncode == 2 and b"is the file stdin reads from" in done.stderr
    assert records.read_text() == '{"id": "a", "text": "one"}\n'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--glob", "/abs/*.txt", "."], "--glob takes file names relative to the folders given"),
        (["--text", "a", "-o", "-", "--resume"], "--resume needs -o FILE"),
    ],
)
def test_options_that_cant_work_are_usage_errors(offline_hub, tiny_models, args, message):
    result = cli_classify(tiny_models, *args)
    assert result.exit_code == 2 and message in result.output


def test_resume_refuses_another_commands_records_and_warns_of_another_models(offline_hub, tiny_models, tmp_path):
    """--resume trusted ids alone: mask records in a classify run's file counted as done, exit 0."""
    out = tmp_path / "out.jsonl"
    mask_record = {"id": "text:0", "model": str(tiny_models["mask"]), "predictions": []}
    out.write_text(json.dumps(mask_record) + "\n")
    result = cli_classify(tiny_models, "--text", "Plants grow.", "-o", out, "--resume")
    assert result.exit_code == 2 and "holds records of another command (no 'label' field)" in result.output
    assert jsonl(out) == [mask_record]
    moved = {"id": "text:0", "model": "/old/place", "label": "neutral"}
    out.write_text(json.dumps(moved) + "\n")
    result = cli_classify(tiny_models, "--text", "Plants grow.", "--text", "More.", "-o", out, "--resume")
    assert result.exit_code == 0 and "1 records in -o" in result.output and "('/old/place' made 1)" in result.output
    assert [r["id"] for r in jsonl(out)] == ["text:0", "text:1"]


def test_a_stop_while_the_model_loads_leaves_the_output_as_it_was(offline_hub, tiny_models, tmp_path, monkeypatch):
    """It said 'rerun with --resume' there, which would have kept an earlier run's records as this one's."""
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "old", "label": "x"}) + "\n")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ClassifyTask, "__init__", stopped)
    result = cli_classify(tiny_models, "--text", "Plants grow.", "-o", out)
    assert (
        result.exit_code == 130
        and f"interrupted before any record was written; -o {out} is as it was." in result.output
    )
    assert jsonl(out) == [{"id": "old", "label": "x"}]
    new = tmp_path / "new.jsonl"  # it did not exist: it still does not (an empty file was left behind)
    assert cli_classify(tiny_models, "--text", "Plants grow.", "-o", new).exit_code == 130 and not new.exists()


def test_a_stop_before_the_first_record_leaves_the_output_as_it_was(offline_hub, tiny_models, tmp_path, monkeypatch):
    """Once the model had loaded, the output was emptied before the first record was made (a summary can take a
    minute): a Ctrl-C then lost an earlier run's records and said the (no) records written were whole. They are
    now replaced only when the first record is written, or when a run that makes none ends."""
    out = tmp_path / "out.jsonl"
    old = [{"id": "old", "label": "x"}]
    out.write_text(json.dumps(old[0]) + "\n")

    def stopped(self, docs, per_pass=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(ClassifyTask, "__call__", stopped)
        result = cli_classify(tiny_models, "--text", "Plants grow.", "-o", out)
    assert result.exit_code == 130 and f"before any record was written; -o {out} is as it was." in result.output
    assert jsonl(out) == old
    assert cli_classify(tiny_models, "--text", "Plants grow.", "-o", out).exit_code == 0
    assert [r["id"] for r in jsonl(out)] == ["text:0"]  # replaced by the first record
    out.write_text(json.dumps(old[0]) + "\n")
    assert cli_classify(tiny_models, "--text", "Plants grow.", "-o", out, "--shard", "1/2").exit_code == 0
    assert jsonl(out) == []  # a run that makes no record (an empty shard) still replaces the old ones


def test_piped_stdin_is_read_without_a_dash(bigbird, tiny_models, tmp_path):
    """`cat report.txt | bigbird mask` reads stdin as `-` does; an empty pipe, or stdin from /dev/null (a batch
    job's), is still "no input", exit 2."""
    model = str(tiny_models["mask"])
    piped = jsonl(bigbird("mask", "-m", model, "-q", input=b"A [MASK] b.", check_rc=0).stdout)
    dashed = jsonl(bigbird("mask", "-", "-m", model, "-q", input=b"A [MASK] b.", check_rc=0).stdout)
    assert [r["predictions"] for r in piped] == [r["predictions"] for r in dashed] and piped[0]["id"] == "stdin"
    (tmp_path / "report.txt").write_text("The [MASK] opened.")
    with open(tmp_path / "report.txt", "rb") as redirected:
        done = subprocess.run([bigbird_executable(), "mask", "-m", model, "-q"], stdin=redirected, capture_output=True)
    assert done.returncode == 0 and jsonl(done.stdout)[0]["id"] == "stdin"
    empty = bigbird("mask", "-m", model, check_rc=2)
    assert "no input" in empty.stderr.decode() and "stdin is empty" in empty.stderr.decode()
    with open(os.devnull, "rb") as nothing:
        done = subprocess.run([bigbird_executable(), "mask", "-m", model], stdin=nothing, capture_output=True)
    assert done.returncode == 2 and b"no input" in done.stderr and b"stdin is empty" not in done.stderr


def test_a_field_no_record_has_stops_before_the_model_loads(bigbird, tiny_models, tmp_path):
    """20,000 records using `body` were 20,000 error records; now: exit 2, one sentence naming the fields the
    records have, before the model loads (the model named here does not exist, and is never reached). A CSV's
    header shows as read."""
    records = tmp_path / "big.jsonl"
    records.write_text("".join(json.dumps({"id": f"n{i}", "body": BAKER}) + "\n" for i in range(30)))
    for args, field in [
        ([], "text"),
        (["--text-field", "body", "--id-field", "key"], "key"),
        (["--text-field", "body", "--text-pair-field", "hypothesis"], "hypothesis"),
    ]:
        result = bigbird("classify", "--jsonl", records, "-m", tmp_path / "no-model", *args, check_rc=2)
        assert result.stdout == b""
        assert result.stderr.decode() == (
            f"error: none of the first 10 records has a {field!r} field; records have: id, body.\n"
        )
    semicolons = tmp_path / "export.csv"
    semicolons.write_text("id;text\n1;" + BAKER + "\n2;" + MUSEUM + "\n")
    result = bigbird("classify", "--dataset", semicolons, "-m", tmp_path / "no-model", check_rc=2)
    assert "has a 'text' field; records have: id;text." in result.stderr.decode()

    # Some records lacking it are theirs alone: error records, the rest done.
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"id": "a", "body": BAKER}) + "\n" + json.dumps({"id": "b", "text": BAKER}) + "\n")
    done = jsonl(bigbird("classify", "--jsonl", mixed, "-m", tiny_models["classify"], "-q", check_rc=1).stdout)
    assert ["error" in r for r in done] == [True, False]

    # One record says so in the singular; an empty object names no field, so it is one bad record, not a wrong name.
    single = tmp_path / "single.jsonl"
    single.write_text(json.dumps({"id": "a", "body": BAKER}) + "\n")
    result = bigbird("classify", "--jsonl", single, "-m", tmp_path / "no-model", check_rc=2)
    assert result.stderr.decode() == "error: the only record has no 'text' field; records have: id, body.\n"
    empty = tmp_path / "empty-object.jsonl"
    empty.write_text("{}\n" + json.dumps({"id": "b", "text": BAKER}) + "\n")
    done = jsonl(bigbird("classify", "--jsonl", empty, "-m", tiny_models["classify"], "-q", check_rc=1).stdout)
    assert ["error" in r for r in done] == [True, False]
    empty.write_text("{}\n")
    done = jsonl(bigbird("classify", "--jsonl", empty, "-m", tiny_models["classify"], "-q", check_rc=1).stdout)
    assert done[0]["error"] == "the record has no 'text' field."


def test_a_tasks_default_batch_size_unless_records_arrive_live_on_stdin(monkeypatch):
    """Without --batch-size the local engine runs the task's default, but 1 where the documents are JSONL records
    another program writes to stdin (a larger batch reads 8 times that many ahead before its first record); a
    --batch-size given always holds, and a task without a default of its own takes 1."""
    sizes = []
    monkeypatch.setattr(runner, "local_engine", lambda task, size: sizes.append(size))
    task = SimpleNamespace(model_name="fake", default_batch_size=lambda: 8)
    common = SimpleNamespace(engine="local", threads=None, batch_size=None)
    for live in (False, True):
        runner._engine(common, lambda: task, ExitStack(), live=live)
    runner._engine(common, FakeTask, ExitStack())
    common.batch_size = 3
    runner._engine(common, lambda: task, ExitStack(), live=True)
    assert sizes == [8, 1, 1, 3]
