"""The JSONL writer and the output claim (bigbird_cli/jsonl.py): whole lines only, one writer per file, --resume."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import bigbird_executable, cli, cli_classify, jsonl, one_sentence

import bigbird_cli.jsonl as jsonl_module
from bigbird.tasks import ClassifyTask
from bigbird_cli.errors import OutputError
from bigbird_cli.jsonl import JsonlWriter, Output


def test_the_writer_escapes_lone_surrogates_in_any_field(offline_hub, tmp_path):
    path = tmp_path / "out.jsonl"
    with open(path, "wb") as handle:
        JsonlWriter(handle).write({"id": "x", "summary": "bad \udc80 text"})
    assert json.loads(path.read_bytes())["summary"] == "bad \udc80 text"


def test_a_second_writer_on_the_same_output_is_refused(offline_hub, tiny_models, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "kept"}\n')
    held = Output(out, resume=True).claim()
    writer = held.writer()  # compacting renamed a new file into place: the lock moved with it
    try:
        result = cli_classify(tiny_models, "--text", "x", "-o", out, "--resume")
        assert result.exit_code == 2 and "another run" in result.output and "own file" in result.output
        with pytest.raises(OutputError):
            Output(out).claim()
    finally:
        writer.close()
    assert jsonl(out) == [{"id": "kept"}]
    Output(out).claim().close()  # free again once the first writer is done


@pytest.mark.parametrize("where", ["folder", "under-a-file", "dev-full"])
def test_unwritable_outputs_are_one_sentence_and_exit_2(offline_hub, tiny_models, tmp_path, where):
    (tmp_path / "file").write_text("x")
    out = {"folder": tmp_path, "under-a-file": tmp_path / "file" / "out.jsonl", "dev-full": Path("/dev/full")}[where]
    if where == "dev-full" and not out.exists():
        pytest.skip("no /dev/full here")
    # With a model that doesn't exist: the output must be the complaint, checked before any model loads.
    model = tiny_models["classify"] if where == "dev-full" else tmp_path / "no-model"
    result = cli("classify", "-m", model, "--text", "x", "-o", out)
    assert result.exit_code == 2, result.output
    assert "-o" in result.output or "could not be written" in result.output
    assert one_sentence(result.output)


def test_a_write_error_leaves_the_file_ending_in_a_whole_line(offline_hub, tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    writer = Output(path).claim().writer()
    writer.write({"id": "a"})
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl_module.os, "write", half_then_full)
    with pytest.raises(OutputError, match="No space left"):
        writer.write({"id": "b", "label": "x"})
    monkeypatch.undo()
    writer.close()
    assert path.read_text() == '{"id": "a"}\n'


def test_resume_keeps_the_output_file_its_link_and_its_permissions(offline_hub, tiny_models, tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    real, link = tmp_path / "store" / "real.jsonl", tmp_path / "link.jsonl"
    cli_classify(tiny_models, "--text", "a", "--text", "", "-o", real)  # one error record: compaction rewrites
    real.chmod(0o600)
    link.symlink_to(real)
    assert cli_classify(tiny_models, "--text", "a", "--text", "", "--text", "b", "-o", link, "--resume").exit_code == 1
    assert link.is_symlink() and real.stat().st_mode & 0o777 == 0o600
    assert [r["id"] for r in jsonl(real)] == ["text:0", "text:1", "text:2"]

    def disk_full(*args):  # once the compacted copy is written beside the output
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copymode", disk_full)
    cli_classify(tiny_models, "--text", "a", "--text", "", "-o", real)
    result = cli_classify(tiny_models, "--text", "a", "--text", "", "-o", real, "--resume")
    assert result.exit_code == 2 and "No space left on device" in result.output and one_sentence(result.output)
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.jsonl"]  # no temporary file left

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copymode", ctrl_c)  # a 290 MB copy was left behind by Ctrl-C here
    assert cli_classify(tiny_models, "--text", "a", "--text", "", "-o", real, "--resume").exit_code == 130
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.jsonl"]


def test_resume_does_not_count_a_dry_runs_plans_as_done(offline_hub, tiny_models, tmp_path):
    out = tmp_path / "out.jsonl"
    cli_classify(tiny_models, "--text", "a", "--text", "b", "--dry-run", "-o", out)
    assert cli_classify(tiny_models, "--text", "a", "--text", "b", "-o", out, "--resume").exit_code == 0
    assert [("label" in r, r.get("dry_run")) for r in jsonl(out)] == [(True, None), (True, None)]


def test_resume_into_a_read_only_folder_is_refused_before_the_model_loads(
    offline_hub, tiny_models, tmp_path, monkeypatch
):
    """Compaction rewrites the file beside itself; found only after the model had loaded."""
    out = tmp_path / "out.jsonl"
    cli_classify(tiny_models, "--text", "a", "--text", "", "-o", out)  # an error record: compaction rewrites
    monkeypatch.setattr(os, "access", lambda path, mode: not (path == tmp_path and mode == os.W_OK))
    monkeypatch.setattr(ClassifyTask, "__init__", lambda *a, **k: pytest.fail("the model loaded"))
    result = cli_classify(tiny_models, "--text", "a", "-o", out, "--resume")
    assert result.exit_code == 2 and "can't be prepared for --resume: its folder is not writable." in result.output


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_resume_into_a_pipe_writes_instead_of_waiting_forever(offline_hub, command, tiny_models, tmp_path):
    """`-o FIFO --resume` opened the pipe for writing, then read it for earlier records: the run waited on
    itself forever. eval also read its records back from -o for the report. A pipe holds no earlier records."""
    import os
    import subprocess
    import threading

    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "a", "text": "Plants grow.", "label": "positive"}\n{"id": "b", "text": "Rain."}\n')
    pipe = tmp_path / "records.pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    args = ["classify"] if command == "classify" else ["eval", "classify"]
    args += ["--jsonl", inputs, "-m", tiny_models["classify"], "-o", pipe, "--resume", "-q"]
    done = subprocess.run([bigbird_executable(), *map(str, args)], capture_output=True, timeout=120)
    reader.join(timeout=30)
    assert done.returncode == (0 if command == "classify" else 1), done.stderr  # eval: "b" has no reference
    records = [json.loads(line) for line in received[0].splitlines()]
    assert [r["id"] for r in records] == ["a", "b"]
    if command == "eval":
        assert "metrics" in records[0] and '"accuracy"' in done.stdout.decode()
