"""What a user tripped over in a day of real use (issue 32): several questions, wrong field names, logs, pipes and
messages; through the installed `bigbird` command on the tiny checkpoints."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import bigbird_executable, jsonl

from bigbird.tasks import QATask
from bigbird.tasks.documents import Document

BAKER = "Every morning the baker lights the oven at four and the bread is ready by six."
MUSEUM = "The museum opened a new wing with paintings and sculptures."
QUESTIONS = ["When is the bread ready?", "Who lights the oven?", "What opened?"]


# --- 1. several questions of one document --------------------------------------------------------------------
def test_qa_asks_every_question_of_every_document_in_order(bigbird, tiny_models, tmp_path):
    """-Q repeated, --questions FILE and a list in a record's question field: one record per (document,
    question) in input order, each with its question and the id ID#qK, answered as that question alone is."""
    model = str(tiny_models["qa"])
    (tmp_path / "a.txt").write_text(BAKER)
    (tmp_path / "b.txt").write_text(MUSEUM)
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    repeated = jsonl(bigbird("qa", *files, "-m", model, *[a for q in QUESTIONS for a in ("-Q", q)], "-q",
                             check_rc=0).stdout)  # fmt: skip
    (tmp_path / "questions.txt").write_text("\n".join(QUESTIONS) + "\n\n")
    from_file = jsonl(bigbird("qa", *files, "-m", model, "--questions", tmp_path / "questions.txt", "-q",
                              check_rc=0).stdout)  # fmt: skip
    assert [(r["id"], r["question"]) for r in repeated] == [
        (f"{f}#q{k}", q) for f in files for k, q in enumerate(QUESTIONS, 1)
    ]
    assert repeated == [{**r, "seconds": s["seconds"]} for r, s in zip(from_file, repeated, strict=True)]
    for record in repeated:
        text = BAKER if record["source"].endswith("a.txt") else MUSEUM
        [alone] = QATask(model, question=record["question"])([Document("x", "x", text)])
        assert (record["answer"], record["start"], record["score"]) == (alone["answer"], alone["start"],
                                                                       alone["score"])  # fmt: skip

    records = tmp_path / "in.jsonl"
    rows = [{"id": "r1", "text": BAKER, "question": QUESTIONS[:2]},
            {"id": "r2", "text": MUSEUM, "question": "What opened?"}]  # fmt: skip
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    listed = jsonl(bigbird("qa", "--jsonl", records, "-m", model, "-q", check_rc=0).stdout)
    assert [(r["id"], r["question"]) for r in listed] == [("r1#q1", QUESTIONS[0]), ("r1#q2", QUESTIONS[1]),
                                                          ("r2", "What opened?")]  # fmt: skip


def test_qa_questions_resume_where_they_stopped(bigbird, tiny_models, tmp_path):
    """Each (document, question) is a unit --resume knows: a run cut after some of them finishes the rest only."""
    model = str(tiny_models["qa"])
    (tmp_path / "a.txt").write_text(BAKER)
    out = tmp_path / "out.jsonl"
    args = ["qa", tmp_path / "a.txt", "-m", model, *[a for q in QUESTIONS for a in ("-Q", q)], "-q", "-o", out]
    bigbird(*args, check_rc=0)
    whole = jsonl(out)
    out.write_text(out.read_text().splitlines(keepends=True)[0])
    bigbird(*args, "--resume", check_rc=0)
    expected = [f"{tmp_path / 'a.txt'}#q{k}" for k in (1, 2, 3)]
    assert [r["id"] for r in jsonl(out)] == [r["id"] for r in whole] == expected


def test_qa_questions_file_that_cant_be_read_is_one_sentence(bigbird, tiny_models, tmp_path):
    (tmp_path / "a.txt").write_text(BAKER)
    missing = bigbird("qa", tmp_path / "a.txt", "-m", tiny_models["qa"], "--questions", tmp_path / "no.txt", check_rc=2)
    assert missing.stderr.decode().count("\n") == 1 and "--questions" in missing.stderr.decode()
    (tmp_path / "blank.txt").write_text("\n \n")
    blank = bigbird("qa", tmp_path / "a.txt", "-m", tiny_models["qa"], "--questions", tmp_path / "blank.txt",
                    check_rc=2)  # fmt: skip
    assert "holds no question" in blank.stderr.decode()


# --- 5. stdin without `-` ----------------------------------------------------------------------------------
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


# --- 3. a wrong field name -----------------------------------------------------------------------------------
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


# --- 4. progress in logs -------------------------------------------------------------------------------------
def test_progress_lines_come_at_a_steady_interval():
    from types import SimpleNamespace

    from bigbird_cli.progress_log import ProgressLog

    now = [100.0]
    lines: list[str] = []
    log = ProgressLog(10, lines.append, interval=30, clock=lambda: now[0])
    counts = SimpleNamespace(ok=0, failed=0, skipped=2)
    advance, stop = log.bind(counts)
    for second in range(1, 8):  # a record every 10 s, the third one failed
        now[0] += 10
        counts.ok += second != 3
        counts.failed += second == 3
        advance()
    stop()
    assert lines == [
        "progress: 3/8 documents, 0.1 documents/s, 1 failed, ETA 50s",
        "progress: 6/8 documents, 0.1 documents/s, 1 failed, ETA 20s",
    ]
    unknown = ProgressLog(None, lines.append, interval=0, clock=lambda: now[0])
    unknown.bind(SimpleNamespace(ok=90, failed=0, skipped=0))
    now[0] += 3600
    unknown.advance()
    assert lines[-1] == "progress: 90 documents, 0.025 documents/s, 0 failed"


def test_a_run_logging_to_a_file_prints_plain_progress_lines(bigbird, tiny_models, corpus):
    """stderr not a terminal (here a pipe, as with nohup or Slurm): plain lines, no progress bar's control codes."""
    result = bigbird("classify", corpus, "-m", tiny_models["classify"], env={"BIGBIRD_PROGRESS_SECONDS": "0"},
                     check_rc=0)  # fmt: skip
    lines = result.stderr.decode().splitlines()
    progress = [line for line in lines if line.startswith("progress: ")]
    assert [line.split(",")[0] for line in progress] == [f"progress: {n}/3 documents" for n in (1, 2, 3)]
    assert all("0 failed" in line and "documents/s" in line and "ETA" in line for line in progress)
    assert not any(c in result.stderr.decode() for c in "\r\x1b\b")


# --- 8. messages ---------------------------------------------------------------------------------------------
def test_messages_say_what_a_user_needs(bigbird, tiny_models, tmp_path):
    model = str(tiny_models["classify"])
    (tmp_path / "blank.txt").write_text("  \n\n\t\n")
    [record] = jsonl(bigbird("classify", tmp_path / "blank.txt", "-m", model, "-q", check_rc=1).stdout)
    assert record["error"].endswith("has no text, only whitespace.")

    # A folder as --jsonl: exit 2 before the model loads (the model named does not exist).
    folder = bigbird("classify", "--jsonl", tmp_path, "-m", tmp_path / "no-model", check_rc=2)
    assert folder.stderr.decode() == f"error: --jsonl {tmp_path} is a folder; give a JSONL file, or the folder as a" \
                                     " path (its files).\n"  # fmt: skip

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


def test_a_checkpoint_of_another_head_or_too_big_says_so(bigbird, tiny_models, tmp_path):
    """classify on a QA checkpoint named a missing pooler weight; a config too big for memory ended with torch's
    allocator text. Now: the checkpoint's architecture and the command that runs it; the memory the config needs
    and the memory the machine has."""
    wrong = bigbird("classify", "--text", BAKER, "-m", tiny_models["qa"], check_rc=2).stderr.decode()
    assert wrong == (f"error: {tiny_models['qa']} is a BigBirdForQuestionAnswering checkpoint, which `bigbird qa` runs;"
                     " classify needs a BigBirdForSequenceClassification checkpoint.\n")  # fmt: skip
    huge = tmp_path / "huge"
    huge.mkdir()
    for name in ("config.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_models["qa"] / name).exists():
            (huge / name).write_bytes((tiny_models["qa"] / name).read_bytes())
    config = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**config, "hidden_size": 10**9}))
    (huge / "model.safetensors").write_bytes((tiny_models["qa"] / "model.safetensors").read_bytes())
    said = bigbird("qa", "--text", BAKER, "-Q", "Who?", "-m", huge, check_rc=2).stderr.decode()
    assert "its config needs" in said and "GiB available." in said and "Allocator" not in said
