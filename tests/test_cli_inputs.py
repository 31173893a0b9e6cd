"""Every input kind through the installed `bigbird` command: files, folders, stdin, --text, JSONL, datasets."""

from __future__ import annotations

import json
import os

import pytest
from conftest import bigbird_executable, cli, cli_classify, jsonl


def test_every_input_kind_in_one_run(bigbird, tiny_models, corpus, tmp_path):
    single = tmp_path / "single.txt"
    single.write_text("The committee met on Tuesday to review the budget.")
    records_file = tmp_path / "records.jsonl"
    records_file.write_text(
        json.dumps({"id": "j1", "text": "Plants create energy through photosynthesis."})
        + "\n"
        + json.dumps({"id": "j2", "text": "Rivers carry sediment to the sea."})
        + "\n"
    )
    dataset = tmp_path / "rows.csv"
    dataset.write_text("id,text\nrow-a,The weather turned cold in November.\nrow-b,A patent describes an invention.\n")

    result = bigbird(
        "classify",
        single,
        corpus,
        "-",
        "--text",
        "Summaries should be short.",
        "--text",
        "Classification assigns a label.",
        "--jsonl",
        records_file,
        "--dataset",
        dataset,
        "-m",
        tiny_models["classify"],
        "--batch-size",
        "3",
        "--threads",
        "1",
        input=b"Masked language models predict a hidden word.",
        check_rc=0,
    )
    records = jsonl(result.stdout)
    assert [(r["id"], r["source"]) for r in records] == [
        (str(single), str(single)),
        ("baker.txt", str(corpus / "baker.txt")),
        ("long.md", str(corpus / "long.md")),
        ("notes/museum.txt", str(corpus / "notes" / "museum.txt")),
        ("stdin", "stdin"),
        ("text:0", "--text"),
        ("text:1", "--text"),
        ("j1", f"{records_file}:1"),
        ("j2", f"{records_file}:2"),
        ("row-a", f"{dataset}[train]:0"),
        ("row-b", f"{dataset}[train]:1"),
    ]
    assert all(r["label"] in {"negative", "neutral", "positive"} for r in records)
    assert all(set(r["scores"]) == {"negative", "neutral", "positive"} for r in records)


def test_jsonl_on_stdin_with_question_fields_and_a_glob(bigbird, tiny_models, corpus, tmp_path):
    lines = [
        {"key": "q1", "body": "The baker lights the oven at four.", "question": "When is the oven lit?"},
        {"key": "q2", "body": "The museum opened a new wing."},
    ]
    stdin = "".join(json.dumps(line) + "\n" for line in lines).encode()
    result = bigbird(
        "qa",
        "--jsonl",
        "-",
        "--text-field",
        "body",
        "--id-field",
        "key",
        "-Q",
        "What opened?",
        corpus,
        "--glob",
        "*.md",
        "-m",
        tiny_models["qa"],
        "-o",
        tmp_path / "out.jsonl",
        "--quiet",
        input=stdin,
        check_rc=0,
    )
    assert result.stdout == b"" and result.stderr == b""
    records = jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == ["long.md", "q1", "q2"]
    texts = ["The baker lights the oven at four.", "The museum opened a new wing."]
    for record, text in zip(records[1:], texts, strict=True):
        assert text[record["start"] : record["end"]] == record["answer"]


def test_dataset_json_file_with_split(bigbird, tiny_models, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "First row of the set."}) + "\n" + json.dumps({"text": "Second row."}) + "\n")
    result = bigbird(
        "mask",
        "--dataset",
        data,
        "--split",
        "validation",
        "--text",
        "A [MASK] here.",
        "-m",
        tiny_models["mask"],
        check_rc=1,
    )
    records = jsonl(result.stdout)
    assert [r["id"] for r in records] == ["text:0", "validation:0", "validation:1"]
    assert "predictions" in records[0] and "no [MASK] token" in records[1]["error"]


def test_undecodable_file_names_and_lone_surrogate_ids_are_written(offline_hub, tiny_models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("A good document.")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"Cafe society met on Tuesday.")
    records_file = tmp_path / "r.jsonl"
    records_file.write_text('{"id": "\\ud800", "text": "a lone surrogate in the id"}\n{"text": "bad \\udfff text"}\n')
    out = tmp_path / "out.jsonl"
    result = cli_classify(tiny_models, folder, "--jsonl", records_file, "-o", out)
    assert result.exit_code == 0, result.output
    records = jsonl(out)  # valid UTF-8 JSON, every line whole
    assert [r["id"] for r in records] == ["caf\\xe9.txt", "good.txt", "\\ud800", f"{records_file}:2"]
    assert all("label" in r for r in records)
    assert "not valid UTF-8" in records[3]["warning"]


def test_the_same_file_name_in_two_folders_gets_two_ids_and_resume_skips_neither(offline_hub, tiny_models, tmp_path):
    for name in ("dupA", "dupB"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "doc.txt").write_text(f"The document in {name}.")
    out = tmp_path / "out.jsonl"
    result = cli_classify(tiny_models, tmp_path / "dupA", tmp_path / "dupB", "-o", out)
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in jsonl(out)]
    assert ids == [str(tmp_path / "dupA" / "doc.txt"), str(tmp_path / "dupB" / "doc.txt")]
    out.write_text(out.read_text().splitlines()[0] + "\n")  # as if the run had stopped after the first
    # Resumed with the folders the other way round: dupA's file is done, dupB's is not.
    result = cli("classify", "-m", tiny_models["classify"], tmp_path / "dupB", tmp_path / "dupA", "-o", out, "--resume")
    assert "1 done, 0 failed, 1 skipped" in result.output
    assert [r["id"] for r in jsonl(out)] == ids


def test_a_malformed_dataset_file_keeps_what_it_could_read(offline_hub, tiny_models, tmp_path):
    lines = tmp_path / "rows.jsonl"  # read as --jsonl is: one line's error
    lines.write_text('{"id": "a", "text": "Plants grow."}\nnot json\n{"id": "c", "text": "Rivers flow."}\n')
    array = tmp_path / "rows.json"  # the datasets reader can't go past its error: the rest is one error record
    array.write_text('[{"id": "a", "text": "Plants grow."}, oops')
    out = tmp_path / "out.jsonl"
    result = cli_classify(tiny_models, "--dataset", lines, "-o", out)
    assert result.exit_code == 1 and [("error" in r) for r in jsonl(out)] == [False, True, False]
    result = cli_classify(tiny_models, "--dataset", array, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "can't be read from row 0 on" in jsonl(out)[-1]["error"]


@pytest.mark.parametrize("header", ["id,text", "\ufeffid,text", ",id,text"])  # plain, Excel's BOM, pandas' index
def test_csv_columns_are_read_as_the_text_they_are(offline_hub, tiny_models, tmp_path, header):
    rows = tmp_path / "rows.csv"
    index = (lambda i: f"{i},") if header.startswith(",") else (lambda i: "")
    body = [f"{index(i)}{row}" for i, row in enumerate(["007,first", "7,second", "8,NA", "9,null"])]
    rows.write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert cli_classify(tiny_models, "--dataset", rows, "-o", out).exit_code == 0
    assert [r["id"] for r in jsonl(out)] == ["007", "7", "8", "9"] and all("error" not in r for r in jsonl(out))


def test_non_utf8_arguments_and_fields_are_replaced_not_fatal(offline_hub, tiny_models, tmp_path):
    import subprocess

    bad = os.fsdecode(b"caf\xe9")  # how Python holds a shell argument that is not UTF-8
    runs = {
        "classify": ["--text", f"{bad} au lait", "-m", tiny_models["classify"]],
        "qa": ["--text", "The tenant pays.", "-Q", f"who {bad}", "-m", tiny_models["qa"]],
        # (in the tiny vocabulary "café"'s first token is only "▁", left out with a warning: museum is predicted)
        "mask": ["--text", "A [MASK] b.", "--targets", f"museum,{bad}", "-m", tiny_models["mask"]],
    }
    for command, args in runs.items():
        done = subprocess.run([bigbird_executable(), command, *map(str, args)], capture_output=True, timeout=120)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, (command, done.stderr[-500:])
    records = tmp_path / "q.jsonl"
    records.write_text(json.dumps({"id": "q", "text": "The tenant pays.", "question": "who \ud800"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert cli("qa", "--jsonl", records, "-m", tiny_models["qa"], "-q", "-o", out).exit_code == 0
    assert jsonl(out)[0]["question"] == "who \ufffd"
