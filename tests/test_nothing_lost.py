"""Issue 12: awkward names, ids, outputs, sizes and options lose no documents, output or time.

The commands run in-process (typer's CliRunner) and write records with -o, which is much faster than starting
the installed command for each case; a few cases that need a real process live in test_cli_batch.py.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import LONG_TEXT, bigbird_executable, jsonl
from typer.testing import CliRunner

import bigbird_cli.jsonl as jsonl_module
from bigbird.tasks import ClassifyTask
from bigbird.tasks import base as task_base
from bigbird.tasks.documents import Document, Inputs, decode_text, iter_jsonl, iter_paths
from bigbird_cli.app import app
from bigbird_cli.engines.local import local_engine
from bigbird_cli.errors import OutputError
from bigbird_cli.jsonl import JsonlWriter, Output

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch, hf_home):
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("BIGBIRD_MODEL_CLASSIFY", raising=False)


def bigbird(*args):
    return runner.invoke(app, [str(a) for a in args])


def classify(tiny_models, *args):
    return bigbird("classify", "-m", tiny_models["classify"], "-q", *args)


def one_sentence(output: str) -> bool:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    return len(errors) == 1 and "Traceback" not in output and errors[0].endswith(".")


# 1. Names that are not valid UTF-8 ------------------------------------------------------------------------------


def test_undecodable_file_names_and_lone_surrogate_ids_are_written(tiny_models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("A good document.")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"Cafe society met on Tuesday.")
    records_file = tmp_path / "r.jsonl"
    records_file.write_text('{"id": "\\ud800", "text": "a lone surrogate in the id"}\n{"text": "bad \\udfff text"}\n')
    out = tmp_path / "out.jsonl"
    result = classify(tiny_models, folder, "--jsonl", records_file, "-o", out)
    assert result.exit_code == 0, result.output
    records = jsonl(out)  # valid UTF-8 JSON, every line whole
    assert [r["id"] for r in records] == ["caf\\xe9.txt", "good.txt", "\\ud800", f"{records_file}:2"]
    assert all("label" in r for r in records)
    assert "not valid UTF-8" in records[3]["warning"]


def test_the_writer_escapes_lone_surrogates_in_any_field(tmp_path):
    path = tmp_path / "out.jsonl"
    with open(path, "wb") as handle:
        JsonlWriter(handle).write({"id": "x", "summary": "bad \udc80 text"})
    assert json.loads(path.read_bytes())["summary"] == "bad \udc80 text"


# 2. Unique ids ------------------------------------------------------------------------------------------------


def test_the_same_file_name_in_two_folders_gets_two_ids_and_resume_skips_neither(tiny_models, tmp_path):
    for name in ("dupA", "dupB"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "doc.txt").write_text(f"The document in {name}.")
    out = tmp_path / "out.jsonl"
    result = classify(tiny_models, tmp_path / "dupA", tmp_path / "dupB", "-o", out)
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in jsonl(out)]
    assert ids == [str(tmp_path / "dupA" / "doc.txt"), str(tmp_path / "dupB" / "doc.txt")]
    out.write_text(out.read_text().splitlines()[0] + "\n")  # as if the run had stopped after the first
    # Resumed with the folders the other way round: dupA's file is done, dupB's is not.
    result = bigbird("classify", "-m", tiny_models["classify"], tmp_path / "dupB", tmp_path / "dupA", "-o", out,
                     "--resume")  # fmt: skip
    assert "1 done, 0 failed, 1 skipped" in result.output
    assert [r["id"] for r in jsonl(out)] == ids


def test_duplicate_ids_in_jsonl_are_error_records_not_skips(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n{"id": "b", "text": "three"}\n')
    docs = list(Inputs(jsonl=[str(path)]).open())
    assert [d.id for d in docs] == ["a", "a", "b"]
    assert docs[0].error is None and "already used" in docs[1].error and docs[2].error is None


def test_resume_keeps_the_error_record_of_a_repeated_id(tiny_models, tmp_path):
    """The first "a" is done, so --resume skips it; the second "a" is no document of its own to skip, and its error
    record (dropped with the other errors when the file is compacted) is written again."""
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n{"id": "b", "text": "three"}\n')
    out = tmp_path / "out.jsonl"
    assert classify(tiny_models, "--jsonl", path, "-o", out).exit_code == 1
    first = jsonl(out)
    assert [(r["id"], "error" in r) for r in first] == [("a", False), ("a", True), ("b", False)]
    result = bigbird("classify", "-m", tiny_models["classify"], "--jsonl", path, "-o", out, "--resume")
    assert result.exit_code == 1, result.output
    assert "0 done, 1 failed, 2 skipped" in result.output
    again = jsonl(out)
    assert sorted(json.dumps(r, sort_keys=True) for r in again) == sorted(json.dumps(r, sort_keys=True) for r in first)


# 3. -o naming an input ----------------------------------------------------------------------------------------


def test_output_naming_an_input_is_refused_before_it_is_opened(tiny_models, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first")
    b.write_text("second")
    result = classify(tiny_models, a, b, "-o", b)
    assert result.exit_code == 2 and "is also an input" in result.output and one_sentence(result.output)
    assert b.read_text() == "second"
    # A hard link to an input: it emptied the input, and a --jsonl one was read back without end.
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"id": "r", "text": "Plants grow."}) + "\n")
    for source, option in ((a, ()), (records, ("--jsonl",))):
        link = tmp_path / f"{source.stem}-hard.jsonl"
        os.link(source, link)
        result = classify(tiny_models, *option, source, "-o", link)
        assert result.exit_code == 2 and "is also an input" in result.output
    assert a.read_text() == "first" and jsonl(records) == [{"id": "r", "text": "Plants grow."}]
    # A new file inside an input folder would be read back as a document.
    result = classify(tiny_models, tmp_path, "-o", tmp_path / "out.txt")
    assert result.exit_code == 2 and not (tmp_path / "out.txt").exists()


# 4. One writer per output -------------------------------------------------------------------------------------


def test_a_second_writer_on_the_same_output_is_refused(tiny_models, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "kept"}\n')
    held = Output(out, resume=True).claim()
    writer = held.writer()  # compacting renamed a new file into place: the lock moved with it
    try:
        result = classify(tiny_models, "--text", "x", "-o", out, "--resume")
        assert result.exit_code == 2 and "another run" in result.output and "own file" in result.output
        with pytest.raises(OutputError):
            Output(out).claim()
    finally:
        writer.close()
    assert jsonl(out) == [{"id": "kept"}]
    Output(out).claim().close()  # free again once the first writer is done


# 5. Outputs that can't be written -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "under-a-file", "dev-full"])
def test_unwritable_outputs_are_one_sentence_and_exit_2(tiny_models, tmp_path, where):
    (tmp_path / "file").write_text("x")
    out = {"folder": tmp_path, "under-a-file": tmp_path / "file" / "out.jsonl", "dev-full": Path("/dev/full")}[where]
    if where == "dev-full" and not out.exists():
        pytest.skip("no /dev/full here")
    # With a model that doesn't exist: the output must be the complaint, checked before any model loads.
    model = tiny_models["classify"] if where == "dev-full" else tmp_path / "no-model"
    result = bigbird("classify", "-m", model, "--text", "x", "-o", out)
    assert result.exit_code == 2, result.output
    assert "-o" in result.output or "could not be written" in result.output
    assert one_sentence(result.output)


def test_a_write_error_leaves_the_file_ending_in_a_whole_line(tmp_path, monkeypatch):
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


# 7. Missing inputs --------------------------------------------------------------------------------------------


def test_missing_inputs_are_reported_before_the_model_loads(tiny_models, tmp_path):
    result = bigbird("classify", "-m", tmp_path / "no-model", tmp_path / "typo.txt")
    assert result.exit_code == 2 and "typo.txt does not exist" in result.output and one_sentence(result.output)
    result = bigbird("classify", "-m", tmp_path / "no-model", "--dataset", "./no-such-file.csv")
    assert result.exit_code == 2 and "does not exist" in result.output and one_sentence(result.output)
    good = tmp_path / "good.txt"
    good.write_text("A good document.")
    out = tmp_path / "out.jsonl"
    result = bigbird("classify", "-m", tiny_models["classify"], good, tmp_path / "typo.txt", "-o", out)
    assert result.exit_code == 1 and "warning:" in result.output.split("\n")[0]
    assert ["error" in r for r in jsonl(out)] == [False, True]


# 8. qa questions ----------------------------------------------------------------------------------------------


def test_qa_question_rules(tiny_models, tmp_path):
    records_file = tmp_path / "q.jsonl"
    long_question = " ".join(["why"] * 300) + "?"
    records_file.write_text(
        json.dumps({"id": "field", "text": "The oven is lit at four.", "question": "When is the oven lit?"})
        + "\n"
        + json.dumps({"id": "long", "text": "The oven is lit at four.", "question": long_question})
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    base = ("qa", "-m", tiny_models["qa"], "-q", "--jsonl", records_file, "-o", out)
    assert bigbird(*base).exit_code == 0
    field, long = jsonl(out)
    assert field["question"] == "When is the oven lit?"
    assert long["question"] == long_question and "only its first 64 were used" in long["warning"]
    assert bigbird(*base, "-Q", "Who lights it?").exit_code == 0
    assert {r["question"] for r in jsonl(out)} == {"Who lights it?"}  # the explicit flag wins
    # A question that leaves no room in the window is an error record that says so.
    assert bigbird(*base, "--max-question-tokens", "300").exit_code == 1
    assert "leaves no room" in jsonl(out)[1]["error"] and "answer" in jsonl(out)[0]
    result = bigbird("qa", "-m", tiny_models["qa"], "--text", "No question anywhere.")
    assert result.exit_code == 2 and "needs a question" in result.output and one_sentence(result.output)


# 9. summarize settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-new-tokens", "100000"], "positions"),
        (["--length-penalty", "nan"], "finite"),
        (["--min-new-tokens", "9", "--max-new-tokens", "3"], "more than --max-new-tokens"),
    ],
)
def test_summarize_refuses_impossible_settings(tiny_models, tmp_path, args, message):
    out = tmp_path / "out.jsonl"
    result = bigbird("summarize", "-m", tiny_models["summarize"], "--text", "Some text.", "-o", out, *args)
    assert result.exit_code == 2 and message in result.output and one_sentence(result.output)
    assert not out.exists() or out.read_text() == ""


# 10. Config fields ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        ({"block_size": 0}, "block_size"),
        ({"max_position_embeddings": 256.5}, "max_position_embeddings"),
        ({"hidden_size": 30}, "hidden_size"),
        ({"id2label": {"0": "a", "2": "c"}}, "id2label"),
        ({"id2label": {"zero": "a"}}, "id2label"),
    ],
)
@pytest.mark.parametrize("command", ["classify", "convert"])
def test_a_broken_config_is_one_sentence_naming_the_field(tiny_models, tmp_path, change, field, command):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["classify"], model)
    config = json.loads((model / "config.json").read_text())
    config.update(change)
    (model / "config.json").write_text(json.dumps(config))
    if command == "convert":
        result = bigbird("convert", model, tmp_path / "dst")
    else:
        result = bigbird("classify", "-m", model, "--text", "x", "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and field in result.output and one_sentence(result.output), result.output


# 11. convert --------------------------------------------------------------------------------------------------


def _damage(model: Path, how: str) -> None:
    weights = model / "model.safetensors"
    if how == "truncated-safetensors":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "empty-safetensors":
        weights.write_bytes(b"")
    elif how == "truncated-bin":
        from safetensors.torch import load_file

        torch.save(load_file(weights), model / "pytorch_model.bin")
        weights.unlink()
        data = (model / "pytorch_model.bin").read_bytes()
        (model / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    elif how == "index-without-weight-map":
        weights.rename(model / "model-00001-of-00001.safetensors")
        (model / "model.safetensors.index.json").write_text('{"metadata": {}}')


@pytest.mark.parametrize(
    "how", ["truncated-safetensors", "empty-safetensors", "truncated-bin", "index-without-weight-map"]
)
def test_convert_refuses_damaged_weights_leaving_nothing_behind(tiny_models, tmp_path, how):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["classify"], model)
    _damage(model, how)
    dst = tmp_path / "out" / "dst"
    result = bigbird("convert", model, dst)
    assert result.exit_code == 2 and one_sentence(result.output), result.output
    assert not dst.exists() and not any((tmp_path / "out").glob(".*")) if (tmp_path / "out").exists() else True


def test_convert_destinations_permissions_and_tokenizer_warning(tiny_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bigbird("convert", tiny_models["classify"], ".", "--force")
    assert result.exit_code == 2 and "current folder" in result.output and one_sentence(result.output)
    (tmp_path / "file").write_text("x")
    result = bigbird("convert", tiny_models["classify"], tmp_path / "file" / "dst")
    assert result.exit_code == 2 and one_sentence(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no stray temporary folders

    umask = os.umask(0o022)
    os.umask(umask)
    no_tokenizer = tmp_path / "weights-only"
    shutil.copytree(tiny_models["classify"], no_tokenizer, ignore=shutil.ignore_patterns("spiece.model", "token*"))
    result = bigbird("convert", no_tokenizer, tmp_path / "dst")
    assert result.exit_code == 0, result.output
    assert "has no spiece.model" in result.output
    assert (tmp_path / "dst").stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "dst").iterdir()} == {0o666 & ~umask}


# 13. Documents with no tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["classify", "summarize", "mask"])
def test_a_document_with_no_tokens_is_an_error_record(tiny_models, tmp_path, command):
    out = tmp_path / "out.jsonl"
    text = "\u200b\u200b\x01\x02"
    result = bigbird(command, "-m", tiny_models[command], "--text", text, "-o", out, "-q")
    assert result.exit_code == 1, result.output
    [record] = jsonl(out)
    assert "no tokens" in record["error"]


# 14. Encodings ------------------------------------------------------------------------------------------------


def test_utf16_files_and_boms_are_read(tmp_path):
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


# 15. bench --plot, help, sentences ----------------------------------------------------------------------------


def test_bench_plot_checks_matplotlib_before_benchmarking(monkeypatch):
    import bigbird.tools.bench as bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("benchmarked before checking --plot"))
    result = bigbird("bench", "--preset", "tiny", "--plot", "x.png")
    assert result.exit_code == 2 and "matplotlib" in result.output and one_sentence(result.output)


def test_help_shows_flags_as_flags_and_one_input_panel():
    result = runner.invoke(app, ["classify", "--help"], terminal_width=200)
    lines = result.output.splitlines()
    assert sum("─ Input ─" in line for line in lines) == 1
    for flag in ("--resume", "--quiet"):
        [line] = [line for line in lines if flag in line and "skip" in line or flag in line and "progress" in line]
        assert "<bool>" not in line


def test_messages_read_as_sentences(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "n", "text": 5}\n[1]\n')
    number, listed = iter_jsonl(str(path))
    assert number.error == "field 'text' is a number, not a string." and "a list" in listed.error
    [gone] = iter_paths([str(tmp_path / "gone.txt")])
    assert "gone.txt" not in gone.error  # the record's id already names it


# 6 and 13(c). Tokenizing in pieces; windows batched by the runner's size ---------------------------------------


def test_tokenizing_in_pieces_matches_the_whole_text_and_truncate_stops_early(tiny_models, monkeypatch):
    task = ClassifyTask(str(tiny_models["classify"]))
    whole = task.tokenizer(LONG_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    monkeypatch.setattr(task_base, "PIECE_CHARS", 300)
    pieces = task.encode(LONG_TEXT)
    assert pieces.ids.tolist() == list(whole["input_ids"]) and pieces.complete
    assert pieces.offsets.tolist() == [list(span) for span in whole["offset_mapping"]]
    task.strategy = "truncate"
    cut = task.encode(LONG_TEXT * 50, capacity=40)
    assert not cut.complete and 40 < len(cut.ids) < len(whole["input_ids"])
    assert cut.ids[:40].tolist() == list(whole["input_ids"])[:40]


def test_windows_go_through_the_model_at_most_size_at_a_time(tiny_models):
    task = ClassifyTask(str(tiny_models["classify"]))
    sequences = [[5] * n for n in (3, 9, 4, 7, 2)]
    batches = list(task.batches(iter(sequences), 2))
    assert [batch.indices for batch in batches] == [[0, 1], [2, 3], [4]]  # in order: sorting is the runner's job
    assert [tuple(batch.input_ids.shape) for batch in batches] == [(2, 9), (2, 7), (1, 2)]
    assert "batch_size" not in ClassifyTask.__init__.__code__.co_varnames + task_base.Task.__init__.__code__.co_varnames


@pytest.mark.parametrize("batch_size", [1, 3])
def test_one_long_documents_chunks_go_through_the_model_batch_size_at_a_time(tiny_models, monkeypatch, batch_size):
    """The runner hands --batch-size down to the task: a single chunked document's windows share forward passes up
    to that size (not one window a pass), and its record is the same as unbatched up to padding noise."""
    task = ClassifyTask(str(tiny_models["classify"]))
    [alone] = task([Document("l", "test", LONG_TEXT * 4)], 1)
    rows: list[int] = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda ids, **kw: rows.append(len(ids)) or forward(ids, **kw))
    [record] = list(local_engine(task, batch_size)(iter([Document("l", "test", LONG_TEXT * 4)])))
    n = record["chunks"]
    assert n > 3 and rows == [min(batch_size, n - k) for k in range(0, n, batch_size)]
    assert record["label"] == alone["label"] and record["chunks"] == alone["chunks"]
    assert record["scores"] == pytest.approx(alone["scores"], abs=1e-4)


def test_documents_keep_printable_ids():
    assert Document("caf\udce9.txt", "s").id == "caf\\xe9.txt"
    assert Document("\ud800", "s").id == "\\ud800"


# Inputs and outputs found trying the CLI (session of 2026-11-22) ------------------------------------------------


def test_output_that_stdin_reads_from_is_refused(tiny_models, tmp_path):
    """`--jsonl - -o in.jsonl < in.jsonl` read its own records back without end, filling the disk."""
    import subprocess

    records = tmp_path / "in.jsonl"
    records.write_text('{"id": "a", "text": "one"}\n')
    with open(records, "rb") as stdin:
        done = subprocess.run([bigbird_executable(), "classify", "--jsonl", "-", "-m", tiny_models["classify"],
                               "-o", records], stdin=stdin, capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and b"is the file stdin reads from" in done.stderr
    assert records.read_text() == '{"id": "a", "text": "one"}\n'


def test_a_malformed_dataset_file_keeps_what_it_could_read(tiny_models, tmp_path):
    lines = tmp_path / "rows.jsonl"  # read as --jsonl is: one line's error
    lines.write_text('{"id": "a", "text": "Plants grow."}\nnot json\n{"id": "c", "text": "Rivers flow."}\n')
    array = tmp_path / "rows.json"  # the datasets reader can't go past its error: the rest is one error record
    array.write_text('[{"id": "a", "text": "Plants grow."}, oops')
    out = tmp_path / "out.jsonl"
    result = classify(tiny_models, "--dataset", lines, "-o", out)
    assert result.exit_code == 1 and [("error" in r) for r in jsonl(out)] == [False, True, False]
    result = classify(tiny_models, "--dataset", array, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "can't be read from row 0 on" in jsonl(out)[-1]["error"]


@pytest.mark.parametrize("header", ["id,text", "\ufeffid,text", ",id,text"])  # plain, Excel's BOM, pandas' index
def test_csv_columns_are_read_as_the_text_they_are(tiny_models, tmp_path, header):
    rows = tmp_path / "rows.csv"
    index = (lambda i: f"{i},") if header.startswith(",") else (lambda i: "")
    body = [f"{index(i)}{row}" for i, row in enumerate(["007,first", "7,second", "8,NA", "9,null"])]
    rows.write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert classify(tiny_models, "--dataset", rows, "-o", out).exit_code == 0
    assert [r["id"] for r in jsonl(out)] == ["007", "7", "8", "9"] and all("error" not in r for r in jsonl(out))


def test_resume_keeps_the_output_file_its_link_and_its_permissions(tiny_models, tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    real, link = tmp_path / "store" / "real.jsonl", tmp_path / "link.jsonl"
    classify(tiny_models, "--text", "a", "--text", "", "-o", real)  # one error record: compaction rewrites
    real.chmod(0o600)
    link.symlink_to(real)
    assert classify(tiny_models, "--text", "a", "--text", "", "--text", "b", "-o", link, "--resume").exit_code == 1
    assert link.is_symlink() and real.stat().st_mode & 0o777 == 0o600
    assert [r["id"] for r in jsonl(real)] == ["text:0", "text:1", "text:2"]

    def disk_full(*args):  # once the compacted copy is written beside the output
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copymode", disk_full)
    classify(tiny_models, "--text", "a", "--text", "", "-o", real)
    result = classify(tiny_models, "--text", "a", "--text", "", "-o", real, "--resume")
    assert result.exit_code == 2 and "No space left on device" in result.output and one_sentence(result.output)
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.jsonl"]  # no temporary file left

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copymode", ctrl_c)  # a 290 MB copy was left behind by Ctrl-C here
    assert classify(tiny_models, "--text", "a", "--text", "", "-o", real, "--resume").exit_code == 130
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.jsonl"]


def test_resume_does_not_count_a_dry_runs_plans_as_done(tiny_models, tmp_path):
    out = tmp_path / "out.jsonl"
    classify(tiny_models, "--text", "a", "--text", "b", "--dry-run", "-o", out)
    assert classify(tiny_models, "--text", "a", "--text", "b", "-o", out, "--resume").exit_code == 0
    assert [("label" in r, r.get("dry_run")) for r in jsonl(out)] == [(True, None), (True, None)]


def test_non_utf8_arguments_and_fields_are_replaced_not_fatal(tiny_models, tmp_path):
    import subprocess

    bad = os.fsdecode(b"caf\xe9")  # how Python holds a shell argument that is not UTF-8
    runs = {
        "classify": ["--text", f"{bad} au lait", "-m", tiny_models["classify"]],
        "qa": ["--text", "The tenant pays.", "-Q", f"who {bad}", "-m", tiny_models["qa"]],
        "mask": ["--text", "A [MASK] b.", "--targets", bad, "-m", tiny_models["mask"]],
    }
    for command, args in runs.items():
        done = subprocess.run([bigbird_executable(), command, *map(str, args)], capture_output=True, timeout=120)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, (command, done.stderr[-500:])
    records = tmp_path / "q.jsonl"
    records.write_text(json.dumps({"id": "q", "text": "The tenant pays.", "question": "who \ud800"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert bigbird("qa", "--jsonl", records, "-m", tiny_models["qa"], "-q", "-o", out).exit_code == 0
    assert jsonl(out)[0]["question"] == "who \ufffd"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_jsonl_is_read(tmp_path, encoding):
    records = tmp_path / "u.jsonl"
    records.write_bytes('{"id": "u", "text": "hi"}\n{"id": "v",\r"text": "ho"}\n'.encode(encoding))  # CR: JSON space
    docs = list(iter_jsonl(str(records)))
    assert [(d.id, d.text, d.error) for d in docs] == [("u", "hi", None), ("v", "ho", None)]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_bad_units_in_utf16_and_utf32_jsonl_are_replaced_with_a_warning(tmp_path, encoding):
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--glob", "/abs/*.txt", "."], "--glob takes file names relative to the folders given"),
        (["--text", "a", "-o", "-", "--resume"], "--resume needs -o FILE"),
    ],
)
def test_options_that_cant_work_are_usage_errors(tiny_models, args, message):
    result = classify(tiny_models, *args)
    assert result.exit_code == 2 and message in result.output


def test_closed_stdin_is_an_error_record(tmp_path):
    saved = sys.stdin
    sys.stdin = None
    try:
        [doc] = list(iter_paths(["-"]))
    finally:
        sys.stdin = saved
    assert doc.error == "stdin is closed; there is nothing to read."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_byte_order_marked_text_is_decoded_and_bad_units_are_warned_about(encoding):
    text, error, warning = decode_text("Plants grow.".encode(encoding), "the file")
    assert (text, error, warning) == ("Plants grow.", None, None)
    text, error, warning = decode_text("Plants grow.".encode(encoding) + b"\x00\xd8", "the file")  # a cut unit
    assert text.startswith("Plants grow.") and error is None and f"not valid {encoding.upper()}" in warning


def test_inline_text_with_lone_surrogates_from_python_is_replaced_with_a_warning():
    [doc] = list(Inputs(texts=["a \ud800 b"]).open())
    assert doc.text == "a \ufffd b" and doc.error is None and "--text number 0 is not valid UTF-8" in doc.warning


def test_folder_walk_follows_links_once_and_reports_what_it_cant_read(tmp_path, monkeypatch):
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


def test_resume_refuses_another_commands_records_and_warns_of_another_models(tiny_models, tmp_path):
    """--resume trusted ids alone: mask records in a classify run's file counted as done, exit 0."""
    out = tmp_path / "out.jsonl"
    mask_record = {"id": "text:0", "model": str(tiny_models["mask"]), "predictions": []}
    out.write_text(json.dumps(mask_record) + "\n")
    result = classify(tiny_models, "--text", "Plants grow.", "-o", out, "--resume")
    assert result.exit_code == 2 and "holds records of another command (no 'label' field)" in result.output
    assert jsonl(out) == [mask_record]
    moved = {"id": "text:0", "model": "/old/place", "label": "neutral"}
    out.write_text(json.dumps(moved) + "\n")
    result = classify(tiny_models, "--text", "Plants grow.", "--text", "More.", "-o", out, "--resume")
    assert result.exit_code == 0 and "1 records in -o" in result.output and "('/old/place' made 1)" in result.output
    assert [r["id"] for r in jsonl(out)] == ["text:0", "text:1"]


def test_a_stop_while_the_model_loads_leaves_the_output_as_it_was(tiny_models, tmp_path, monkeypatch):
    """It said 'rerun with --resume' there, which would have kept an earlier run's records as this one's."""
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "old", "label": "x"}) + "\n")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ClassifyTask, "__init__", stopped)
    result = classify(tiny_models, "--text", "Plants grow.", "-o", out)
    assert (
        result.exit_code == 130
        and f"interrupted before any record was written; -o {out} is as it was." in result.output
    )
    assert jsonl(out) == [{"id": "old", "label": "x"}]
    new = tmp_path / "new.jsonl"  # it did not exist: it still does not (an empty file was left behind)
    assert classify(tiny_models, "--text", "Plants grow.", "-o", new).exit_code == 130 and not new.exists()


def test_resume_into_a_read_only_folder_is_refused_before_the_model_loads(tiny_models, tmp_path, monkeypatch):
    """Compaction rewrites the file beside itself; found only after the model had loaded."""
    out = tmp_path / "out.jsonl"
    classify(tiny_models, "--text", "a", "--text", "", "-o", out)  # an error record: compaction rewrites
    monkeypatch.setattr(os, "access", lambda path, mode: not (path == tmp_path and mode == os.W_OK))
    monkeypatch.setattr(ClassifyTask, "__init__", lambda *a, **k: pytest.fail("the model loaded"))
    result = classify(tiny_models, "--text", "a", "-o", out, "--resume")
    assert result.exit_code == 2 and "can't be prepared for --resume: its folder is not writable." in result.output


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_resume_into_a_pipe_writes_instead_of_waiting_forever(command, tiny_models, tmp_path):
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
