"""Every input kind through the installed `bigbird` command: files, folders, stdin, --text, JSONL, datasets."""

from __future__ import annotations

import json

from conftest import jsonl


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
        "classify", single, corpus, "-",
        "--text", "Summaries should be short.", "--text", "Classification assigns a label.",
        "--jsonl", records_file, "--dataset", dataset,
        "-m", tiny_models["classify"], "--batch-size", "3", "--threads", "1",
        input=b"Masked language models predict a hidden word.", check_rc=0,
    )  # fmt: skip
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
        "qa", "--jsonl", "-", "--text-field", "body", "--id-field", "key", "-Q", "What opened?",
        corpus, "--glob", "*.md", "-m", tiny_models["qa"], "-o", tmp_path / "out.jsonl", "--quiet",
        input=stdin, check_rc=0,
    )  # fmt: skip
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
        "mask", "--dataset", data, "--split", "validation", "--text", "A [MASK] here.",
        "-m", tiny_models["mask"], check_rc=1,
    )  # fmt: skip
    records = jsonl(result.stdout)
    assert [r["id"] for r in records] == ["text:0", "validation:0", "validation:1"]
    assert "predictions" in records[0] and "no [MASK] token" in records[1]["error"]
