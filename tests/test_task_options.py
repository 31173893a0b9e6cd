"""The pipelines' options (qa, classify, mask), `attention`/`seconds` in records, and --dry-run: in Python and
through the installed `bigbird` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch
from conftest import LONG_TEXT, cli, jsonl, one_sentence

from bigbird.tasks import ClassifyTask, MaskTask, QATask, SummarizeTask, TaskError
from bigbird.tasks.base import sliding_windows
from bigbird.tasks.classify import default_function
from bigbird.tasks.documents import Document, Inputs

QUESTION = "When is the bread ready?"
SHORT = "Every morning the baker lights the oven at four and the bread is ready by six."


def doc(text: str, doc_id: str = "d", **fields) -> Document:
    return Document(doc_id, "test", text, fields=fields)


# --- classify ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "problem_type, labels, expected",
    [
        ("regression", 1, "none"),
        ("multi_label_classification", 3, "sigmoid"),
        (None, 1, "sigmoid"),
        ("single_label_classification", 3, "softmax"),
        (None, 3, "softmax"),
    ],
)
def test_default_function_follows_the_pipeline(problem_type, labels, expected):
    assert default_function(problem_type, labels) == expected


def test_classify_functions_apply_to_the_logits(tiny_models):
    model = str(tiny_models["classify"])
    raw = ClassifyTask(model, function="none")
    logits = raw.model(torch.tensor([raw.wrap(raw.encode(SHORT).ids)])).logits[0].detach()
    for function, expected in [("none", logits), ("sigmoid", logits.sigmoid()), ("softmax", logits.softmax(-1))]:
        task = raw if function == "none" else ClassifyTask(model, function=function)
        [record] = task([doc(SHORT)])
        got = torch.tensor([record["scores"][label] for label in task.labels])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert record["label"] == task.labels[int(expected.argmax())]


def test_classify_text_pairs_read_both_texts(tiny_models):
    task = ClassifyTask(str(tiny_models["classify"]), text_pair_field="hypothesis")
    premise, hypothesis = SHORT, "The bread is ready early."
    [record, missing] = task([doc(premise, hypothesis=hypothesis), doc(premise, "m")])
    pair = task.wrap(task.encode(premise).ids, task.encode(hypothesis).ids)
    expected = task.scores([pair])[0]
    assert [record["scores"][label] for label in task.labels] == pytest.approx(expected.tolist(), abs=1e-6)
    assert "no text pair" in missing["error"]
    # A long premise is chunked beside the whole hypothesis: each input keeps the pair.
    [long] = task([doc(LONG_TEXT, hypothesis=hypothesis)])
    assert long["chunks"] > 1 and long["input_tokens"] == len(task.encode(LONG_TEXT).ids)


def test_cli_classify_options(bigbird, tiny_models, tmp_path):
    model = str(tiny_models["classify"])
    rows = [{"id": "a", "text": SHORT, "claim": "Bread by six."}, {"id": "b", "text": LONG_TEXT, "claim": "Rivers."}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--function", "sigmoid", "--top-k", "all", "--text-pair-field", "claim"]
    records = jsonl(bigbird("classify", "--jsonl", path, "-m", model, *args, check_rc=0).stdout)
    task = ClassifyTask(model, function="sigmoid", text_pair_field="claim")
    expected = [task([d])[0] for d in Inputs(jsonl=[str(path)], extra_fields=("claim",)).open()]
    for got, want in zip(records, expected, strict=True):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5) and len(got["scores"]) == 3
        assert got["chunks"] == want["chunks"]
    bad = bigbird("classify", "--text", SHORT, "-m", model, "--top-k", "0")
    assert bad.returncode == 2 and "--top-k" in bad.stderr.decode()


# --- mask ----------------------------------------------------------------------------------------------------
def test_mask_targets_keep_full_softmax_scores(tiny_models):
    model = str(tiny_models["mask"])
    text = "The museum opened a new [MASK] with paintings."
    full = MaskTask(model, top_k=10_000)([doc(text)])[0]["predictions"][0]
    score_of = {p["token_id"]: p["score"] for p in full}
    task = MaskTask(model, top_k=5, targets=["museum", "paintings", "zqxjv"])
    expected_ids = {task.encode(word).ids[0] for word in ["museum", "paintings"]}  # zqxjv: see the test below
    assert set(task.target_ids.tolist()) == expected_ids
    predictions = task([doc(text)])[0]["predictions"][0]
    assert {p["token_id"] for p in predictions} == expected_ids
    for p in predictions:
        assert p["score"] == pytest.approx(score_of[p["token_id"]], abs=1e-7)
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)


def test_mask_target_whose_first_piece_is_only_the_word_boundary_is_left_out_by_name(bigbird, tiny_models):
    """The tiny vocabulary tokenizes "zqxjv" as "▁", "z", ...: its first token would predict "" for it. It is left
    out with a warning naming it; a word of several pieces is kept, with a warning naming the piece that stands for
    it; when no word is left, the run is refused in one sentence."""
    model = str(tiny_models["mask"])
    task = MaskTask(model, targets=["museum", "zqxjv"])
    assert task.tokenizer.convert_ids_to_tokens(task.encode("zqxjv").ids.tolist())[0] == "▁"
    assert task.target_ids.tolist() == [task.encode("museum").ids[0]]
    assert any("'zqxjv'" in w and "word-boundary marker" in w and "left out" in w for w in task.warnings)
    assert any("'museum'" in w and "stands for it" in w for w in task.warnings)
    result = bigbird("mask", "--text", "A [MASK] b.", "-m", model, "--targets", "museum,zqxjv", "--top-k", "3")
    [record] = jsonl(result.stdout)
    assert all(p["token"] for p in record["predictions"][0]) and "'zqxjv'" in result.stderr.decode()
    refused = bigbird("mask", "--text", "A [MASK] b.", "-m", model, "--targets", "zqxjv", check_rc=2)
    assert "none of the words gives a token that fills in as a word" in refused.stderr.decode()


def test_cli_mask_targets(bigbird, tiny_models):
    model = str(tiny_models["mask"])
    text = "The museum opened a new [MASK] with paintings."
    args = ["--targets", "museum,paintings", "--targets", "zqxjv", "--top-k", "2"]
    [record] = jsonl(bigbird("mask", "--text", text, "-m", model, *args, check_rc=0).stdout)
    expected = MaskTask(model, top_k=2, targets=["museum", "paintings", "zqxjv"])([doc(text)])[0]
    assert [p["token_id"] for p in record["predictions"][0]] == [p["token_id"] for p in expected["predictions"][0]]


@pytest.mark.parametrize(
    ("task", "model", "options"),
    [
        (ClassifyTask, "classify", {"top_k": -1}),
        (ClassifyTask, "classify", {"top_k": 0}),
        (MaskTask, "mask", {"top_k": 0}),
        (QATask, "qa", {"top_k": 0}),
        (QATask, "qa", {"max_answer_tokens": 0}),
        (QATask, "qa", {"max_question_tokens": 0}),
    ],
)
def test_python_tasks_refuse_counts_under_one(tiny_models, task, model, options):
    with pytest.raises(TaskError, match=f"{next(iter(options))} must be at least 1"):
        task(str(tiny_models[model]), **options)


def test_mask_targets_may_be_one_word(tiny_models):
    model = str(tiny_models["mask"])
    text = "The museum opened a new [MASK] with paintings."
    [one] = MaskTask(model, targets="museum")([doc(text)])
    [listed] = MaskTask(model, targets=["museum"])([doc(text)])
    assert one["predictions"] == listed["predictions"] and len(one["predictions"][0]) == 1


def test_cli_mask_targets_that_name_no_word_are_refused(bigbird, tiny_models):
    result = bigbird("mask", "--text", "A [MASK] b.", "-m", tiny_models["mask"], "--targets", " , ", check_rc=2)
    assert "--targets names no word" in result.stderr.decode()


# --- qa ------------------------------------------------------------------------------------------------------
def test_qa_doc_stride_sets_the_window_overlap(tiny_models):
    model = str(tiny_models["qa"])
    task = QATask(model, question=QUESTION, doc_stride=40)
    [record] = task([doc(LONG_TEXT)])
    q_ids = task.encode(QUESTION).ids
    capacity = task.max_tokens - len(task.wrap(q_ids, []))
    assert record["chunks"] == len(sliding_windows(record["input_tokens"], capacity, 40))
    assert QATask(model, question=QUESTION, doc_stride=0)([doc(LONG_TEXT)])[0]["chunks"] < record["chunks"]


# The pipeline's options and ours, by name: (pipeline kwargs, QATask kwargs).
PIPELINE_CASES = [
    ({"top_k": 3, "doc_stride": 64, "max_seq_len": 256, "max_answer_len": 30}, {"top_k": 3, "doc_stride": 64}),
    (
        {"top_k": 4, "align_to_words": False, "max_answer_len": 4, "doc_stride": 50, "max_seq_len": 256},
        {"top_k": 4, "align_to_words": False, "max_answer_tokens": 4, "doc_stride": 50},
    ),
    (
        {"top_k": 3, "handle_impossible_answer": True, "doc_stride": 30, "max_seq_len": 120, "max_answer_len": 15},
        {"top_k": 3, "handle_impossible_answer": True, "doc_stride": 30, "max_seq_len": 120, "max_answer_tokens": 15},
    ),
    (
        {"top_k": 1, "doc_stride": 0, "max_seq_len": 200, "max_answer_len": 8},
        {"doc_stride": 0, "max_seq_len": 200, "max_answer_tokens": 8},
    ),
]


def test_qa_answers_are_the_question_answering_pipelines(tiny_models):
    """transformers 4.56.2's question-answering pipeline (its oracle venv, with torch) on the same tiny checkpoint
    and documents of several windows: the same answers, scores and offsets, under its options. Its fast tokenizer
    gives a word's first piece the blank before it, so its answers are compared with that blank left out; the
    documents open with a word found nowhere else, the one word without a blank before it."""
    from test_tokenizers import ORACLE_SCRIPT, oracle_python

    model = str(tiny_models["qa"])
    texts = ["Notes: " + LONG_TEXT, "Preface, " + LONG_TEXT[: len(LONG_TEXT) // 2] + " The bread costs two coins."]
    questions = [QUESTION, "Where does the sediment settle?"]
    cases = [
        {"op": "qa_pipeline", "model_dir": model, "question": q, "context": t, "kwargs": kwargs}
        for kwargs, _ in PIPELINE_CASES
        for q, t in zip(questions, texts, strict=True)
    ]
    request = [{"family": "bigbird", "model_dir": model, "cases": cases}]
    done = subprocess.run(
        [str(oracle_python()), str(ORACLE_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = iter(json.loads(done.stdout)[0])
    for _, options in PIPELINE_CASES:
        task = QATask(model, **options)
        records = task([doc(t, f"d{i}", question=q) for i, (q, t) in enumerate(zip(questions, texts, strict=True))])
        for record in records:
            result = next(results)
            assert "value" in result, result
            expected = [_visible(answer) for answer in result["value"]]
            got = record.get("answers", [record])
            assert record["chunks"] > 1
            assert [(a["answer"], a["start"], a["end"]) for a in got] == [a[:3] for a in expected], options
            # Logits agree to ~5e-4 on this random checkpoint (float32 sums in another order): a score to ~1e-3.
            assert [a["score"] for a in got] == [pytest.approx(a[3], rel=2e-3) for a in expected], options


def _visible(answer: dict) -> tuple[str, int, int, float]:
    """A pipeline answer without the whitespace at its edges (a blank one: empty, where it starts): (answer,
    start, end, score)."""
    text = answer["answer"]
    lead, trail = len(text) - len(text.lstrip()), len(text) - len(text.rstrip())
    start = answer["start"] + lead
    return text.strip(), start, max(start, answer["end"] - trail), answer["score"]


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("qa", {"doc_stride": 10**6}, "--doc-stride takes 0 to 252 tokens"),
        ("pegasus-qa", {"handle_impossible_answer": True}, "this model's tokenizer has none"),
    ],
)
def test_qa_options_that_cant_work_are_refused(tiny_models, model, options, message):
    with pytest.raises(TaskError, match=message):
        QATask(str(tiny_models[model]), question=QUESTION, **options)


def test_qa_doc_stride_that_leaves_no_room_beside_a_long_question_fails_that_document(tiny_models):
    task = QATask(str(tiny_models["qa"]), doc_stride=200, max_question_tokens=200)
    long_question, short_question = " ".join(["repairs"] * 120), QUESTION
    failed, ok = task([doc(LONG_TEXT, "a", question=long_question), doc(LONG_TEXT, "b", question=short_question)])
    assert "leaves the windows no room to advance" in failed["error"] and "error" not in ok


def test_qa_null_answer_wins_when_cls_is_likeliest(tiny_models, monkeypatch):
    """With --handle-impossible-answer the [CLS] span competes: when it is likeliest, the answer is ""."""
    task = QATask(str(tiny_models["qa"]), question=QUESTION, handle_impossible_answer=True, top_k=3)
    plain = QATask(str(tiny_models["qa"]), question=QUESTION, top_k=3)([doc(SHORT)])[0]
    [record] = task([doc(SHORT)])
    null = [a for a in record["answers"] if a["answer"] == ""]
    assert len(record["answers"]) == 3 and len(null) <= 1
    original = task._logits

    def cls_wins(ids, mask, firsts):
        start, end = (logits.clone() for logits in original(ids, mask, firsts))
        start[:, 0] = end[:, 0] = 50.0
        return start, end

    monkeypatch.setattr(task, "_logits", cls_wins)
    [record] = task([doc(SHORT)])
    assert record["answer"] == "" and record["start"] == record["end"] == 0 and record["score"] > 0.99
    assert record["answers"][1]["answer"] != "" and plain["answer"] != ""


def test_cli_qa_options(bigbird, tiny_models, corpus):
    model = str(tiny_models["qa"])
    args = ["-Q", QUESTION, "--doc-stride", "40", "--handle-impossible-answer", "--top-k", "2", "--piece-spans"]
    records = jsonl(bigbird("qa", corpus, "-m", model, *args, "--max-seq-len", "150", check_rc=0).stdout)
    task = QATask(
        model,
        question=QUESTION,
        doc_stride=40,
        handle_impossible_answer=True,
        top_k=2,
        align_to_words=False,
        max_seq_len=150,
    )
    expected = [task([d])[0] for d in Inputs(paths=[str(corpus)]).open()]
    assert [(r["answer"], r["chunks"]) for r in records] == [(r["answer"], r["chunks"]) for r in expected]


# --- attention, seconds, dry run ----------------------------------------------------------------------------
def test_records_say_which_attention_ran(tiny_models):
    """The tiny checkpoints are block-sparse: a full window runs it, a short document falls back to full."""
    task = ClassifyTask(str(tiny_models["classify"]))
    short, long = task([doc(SHORT, "s"), doc(LONG_TEXT, "l")], 1)
    assert short["attention"] == "original_full" and long["attention"] == "block_sparse"
    assert short["seconds"] >= 0 and long["seconds"] >= 0
    # Batched with long chunks (size 2), the short one is not padded to their width: it runs as it would alone.
    short, _ = task([doc(SHORT, "s"), doc(LONG_TEXT, "l")], 2)
    assert short["attention"] == "original_full"


CASES = {
    "summarize": ("summarize", [], lambda m, **kw: SummarizeTask(m, **kw)),
    "qa": ("qa", ["-Q", QUESTION], lambda m, **kw: QATask(m, question=QUESTION, **kw)),
    "classify": ("classify", [], lambda m, **kw: ClassifyTask(m, **kw)),
    "mask": ("mask", [], lambda m, **kw: MaskTask(m, **kw)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_needs_no_weights_and_plans_as_the_run(case, bigbird, tiny_models, tmp_path):
    """A checkpoint without its weights: --dry-run still reports what the full run does."""
    checkpoint, args, make_task = CASES[case]
    weightless = tmp_path / "weightless"
    shutil.copytree(tiny_models[checkpoint], weightless, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    texts = [SHORT + " [MASK].", "[MASK] " + LONG_TEXT + " [MASK]."] if case == "mask" else [SHORT, LONG_TEXT]
    source = [arg for text in texts for arg in ("--text", text)]
    records = jsonl(bigbird(case, *source, "-m", weightless, *args, "--dry-run", check_rc=0).stdout)
    real = make_task(str(tiny_models[checkpoint]))([doc(text, f"text:{k}") for k, text in enumerate(texts)])
    keys = ["input_tokens", "chunks", "truncated"]
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys} for r in real]
    assert all(r["dry_run"] is True and r["attention"] in ("block_sparse", "original_full") for r in records)
    assert records[1]["chunks"] > 1
    with pytest.raises(Exception, match="weights can't be loaded"):
        make_task(str(weightless))
    assert make_task(str(weightless), dry_run=True).model is None


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_dry_run_fetches_no_weights_from_the_hub(dry_run, tiny_models, monkeypatch):
    """A Hub id in a dry run downloads the config and tokenizer files only; a real run asks for the weights too."""
    from bigbird.models import checkpoints

    asked: list[list[str]] = []

    def download(repo_id, revision, patterns):
        asked.append(patterns)
        return tiny_models["classify"]

    monkeypatch.setattr(checkpoints, "_download", download)
    task = ClassifyTask("google/tiny-bird", dry_run=dry_run)
    wanted = {name for patterns in asked for name in patterns}
    assert "config.json" in wanted and "spiece.model" in wanted
    assert ("model.safetensors" in wanted) is not dry_run
    assert (task.model is None) is dry_run


def test_a_checkpoints_min_length_past_a_shorter_max_new_tokens_stops_at_the_maximum(tmp_path):
    """Only a --min-new-tokens the user gave past the maximum is refused; the checkpoint's own min_length is not."""
    from bigbird.tools.tiny import make_tiny_checkpoint

    model = make_tiny_checkpoint(tmp_path / "m", "pegasus", "conditional_generation", min_length=20, max_length=30)
    [record] = SummarizeTask(str(model), max_new_tokens=5)([doc(SHORT)])
    assert "error" not in record
    with pytest.raises(TaskError, match="--min-new-tokens 40 is more than the 29 new tokens"):
        SummarizeTask(str(model), min_new_tokens=40)


def test_qa_question_rules(offline_hub, tiny_models, tmp_path):
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
    assert cli(*base).exit_code == 0
    field, long = jsonl(out)
    assert field["question"] == "When is the oven lit?"
    assert long["question"] == long_question and "only its first 64 were used" in long["warning"]
    assert cli(*base, "-Q", "Who lights it?").exit_code == 0
    assert {r["question"] for r in jsonl(out)} == {"Who lights it?"}  # the explicit flag wins
    # A question that leaves no room in the window is an error record that says so.
    assert cli(*base, "--max-question-tokens", "300").exit_code == 1
    assert "leaves no room" in jsonl(out)[1]["error"] and "answer" in jsonl(out)[0]
    result = cli("qa", "-m", tiny_models["qa"], "--text", "No question anywhere.")
    assert result.exit_code == 2 and "needs a question" in result.output and one_sentence(result.output)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-new-tokens", "100000"], "positions"),
        (["--length-penalty", "nan"], "finite"),
        (["--min-new-tokens", "9", "--max-new-tokens", "3"], "more than --max-new-tokens"),
    ],
)
def test_summarize_refuses_impossible_settings(offline_hub, tiny_models, tmp_path, args, message):
    out = tmp_path / "out.jsonl"
    result = cli("summarize", "-m", tiny_models["summarize"], "--text", "Some text.", "-o", out, *args)
    assert result.exit_code == 2 and message in result.output and one_sentence(result.output)
    assert not out.exists() or out.read_text() == ""


def test_what_a_record_warns_of_is_said_on_stderr_as_it_is_written(bigbird, tiny_models, tmp_path):
    """A question cut to --max-question-tokens was in its record only, while a read warning (bytes replaced) was
    said on stderr when the document was read, ahead of the errors of documents read before it: every warning is
    now said with its record, in input order, an error record's read warning too."""
    long_question = " ".join(["why"] * 100) + "?"
    lines = [
        json.dumps({"id": "empty", "text": "", "question": "When?"}).encode(),
        json.dumps({"id": "long", "text": "The oven is lit at four.", "question": long_question}).encode(),
        b'{"id": "bytes", "text": "Lit at \xff four.", "question": "When?"}',
        b'{"id": "both", "text": "\xff", "question": "When?"}',
    ]
    result = bigbird("qa", "-m", tiny_models["qa"], "--jsonl", "-", "-q", input=b"\n".join(lines) + b"\n", check_rc=1)
    said = [line.split(":")[0] + ": " + line.split(": ")[1] for line in result.stderr.decode().splitlines()]
    assert said == ["error: empty", "warning: long", "warning: bytes", "warning: both", "error: both"], said
    assert "warning" in jsonl(result.stdout)[3]
