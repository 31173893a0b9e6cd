"""qa's questions (commands/qa.py, bigbird.tasks.qa.one_per_question): several questions of one document, each
(document, question) one unit of work with its own id, through the installed `bigbird` command."""

from __future__ import annotations

import json

import pytest
from conftest import BAKER, MUSEUM, cli, jsonl, one_sentence

from bigbird.tasks import QATask, TaskError
from bigbird.tasks.documents import Document

QUESTIONS = ["When is the bread ready?", "Who lights the oven?", "What opened?"]


def test_qa_asks_every_question_of_every_document_in_order(bigbird, tiny_models, tmp_path):
    """-Q repeated, --questions FILE and a list in a record's question field: one record per (document,
    question) in input order, each with its question and the id ID#qK, answered as that question alone is."""
    model = str(tiny_models["qa"])
    (tmp_path / "a.txt").write_text(BAKER)
    (tmp_path / "b.txt").write_text(MUSEUM)
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    repeated = jsonl(
        bigbird("qa", *files, "-m", model, *[a for q in QUESTIONS for a in ("-Q", q)], "-q", check_rc=0).stdout
    )
    (tmp_path / "questions.txt").write_text("\n".join(QUESTIONS) + "\n\n")
    from_file = jsonl(
        bigbird("qa", *files, "-m", model, "--questions", tmp_path / "questions.txt", "-q", check_rc=0).stdout
    )
    assert [(r["id"], r["question"]) for r in repeated] == [
        (f"{f}#q{k}", q) for f in files for k, q in enumerate(QUESTIONS, 1)
    ]
    assert repeated == [{**r, "seconds": s["seconds"]} for r, s in zip(from_file, repeated, strict=True)]
    for record in repeated:
        text = BAKER if record["source"].endswith("a.txt") else MUSEUM
        [alone] = QATask(model, question=record["question"])([Document("x", "x", text)])
        assert (record["answer"], record["start"]) == (alone["answer"], alone["start"])
        # Another process may time its way to another matmul kernel (or thread count): the last bits can differ.
        assert record["score"] == pytest.approx(alone["score"], rel=1e-6)

    records = tmp_path / "in.jsonl"
    rows = [
        {"id": "r1", "text": BAKER, "question": QUESTIONS[:2]},
        {"id": "r2", "text": MUSEUM, "question": "What opened?"},
    ]
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    listed = jsonl(bigbird("qa", "--jsonl", records, "-m", model, "-q", check_rc=0).stdout)
    assert [(r["id"], r["question"]) for r in listed] == [
        ("r1#q1", QUESTIONS[0]),
        ("r1#q2", QUESTIONS[1]),
        ("r2", "What opened?"),
    ]


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
    blank = bigbird(
        "qa", tmp_path / "a.txt", "-m", tiny_models["qa"], "--questions", tmp_path / "blank.txt", check_rc=2
    )
    assert "holds no question" in blank.stderr.decode()


def test_eval_qa_refuses_questions_asked_of_every_document(bigbird, tiny_models, tmp_path):
    """eval scores one answer per reference: several questions for every document would score each reference
    against every question's answer, so the run is refused in one sentence before the model loads."""
    records = tmp_path / "dev.jsonl"
    records.write_text(json.dumps({"id": "a", "text": BAKER, "answers": ["six"]}) + "\n")
    args = ["--jsonl", records, "-m", tiny_models["qa"], "--answer-field", "answers"]
    result = cli("eval", "qa", *args, "-Q", QUESTIONS[0], "-Q", QUESTIONS[1])
    assert result.exit_code == 2 and one_sentence(result.output), result.output
    assert "eval qa scores one question per document" in result.output
    bigbird("eval", "qa", *args, "-Q", QUESTIONS[0], "-q", check_rc=0)  # one question for every document is scored


def test_eval_qa_makes_a_record_asking_several_questions_an_error_record(tiny_models, tmp_path):
    """Such a record became one document per question, each scored against the record's one reference (and the
    report counted them all). Now it is one error record, and the others are scored."""
    records = tmp_path / "dev.jsonl"
    lines = [
        {"id": "a", "text": BAKER, "question": [QUESTIONS[0], QUESTIONS[1]], "answers": ["six"]},
        {"id": "b", "text": BAKER, "question": [QUESTIONS[0]], "answers": ["six"]},  # a list of one is one question
        {"id": "c", "text": BAKER, "question": QUESTIONS[1], "answers": ["six"]},
    ]
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "scored.jsonl"
    result = cli("eval", "qa", "--jsonl", records, "-m", tiny_models["qa"], "--answer-field", "answers", "-o", out)
    assert result.exit_code == 1, result.output
    done = {r["id"]: r for r in jsonl(out)}
    assert sorted(done) == ["a", "b#q1", "c"]
    assert done["a"]["error"] == "eval qa scores one question per document, and this record's 'question' asks 2"
    assert "metrics" in done["b#q1"] and "metrics" in done["c"]
    assert "a: eval qa scores one question per document" in result.output


def test_max_seq_len_past_the_model_warns_and_one_leaving_no_room_is_refused(tiny_models):
    """--max-seq-len 100000 on a 256-position model was cut to 256 without a word; --max-seq-len 1 failed every
    document, naming the 1-token window the model's and pointing at --max-question-tokens only."""
    model = str(tiny_models["qa"])
    positions = QATask(model, question="Who?").max_tokens
    assert QATask(model, question="Who?", max_seq_len=100000).warnings == [
        f"--max-seq-len 100000 is past the model's {positions} positions: windows are {positions} tokens."
    ]
    assert QATask(model, question="Who?", max_seq_len=positions).warnings == []
    with pytest.raises(TaskError, match="--max-seq-len 1 leaves no room for a question and a document beside"):
        QATask(model, question="Who?", max_seq_len=1)
    long_question = "How many bakers " * 8 + "?"
    [record] = QATask(model, question=long_question, max_seq_len=8)([Document("x", "x", BAKER)])
    assert "leaves no room in the --max-seq-len's 8-token window" in record["error"]
    assert record["error"].endswith("lower --max-question-tokens or raise --max-seq-len.")
