"""`bigbird eval`: metric values against their references (Google's rouge-score, the SQuAD v1.1 definition,
macro F1 from its definition), the report and its bootstrap intervals, and the command end to end."""

from __future__ import annotations

import json
import re
import shlex
import string
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import LONG_TEXT, bigbird_executable, jsonl
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from bigbird.eval import metrics as eval_metrics
from bigbird.eval.metrics import TASKS, confusion_matrix, macro_f1, qa_scores, rouge_scores
from bigbird.eval.report import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, build_report
from bigbird_cli.app import app

# Summaries as the Pegasus checkpoints write them (`<n>` between sentences) and their references.
SUMMARIES = [
    (
        "the river carries sediment to the sea .<n>deltas grow slowly over centuries .",
        "Rivers carry sediment to the sea.\nThere it settles and builds wide deltas over the centuries.",
    ),
    (
        "a new wing opened at the museum with paintings and sculptures .",
        "The museum opened a new wing.\nIt holds paintings, sculptures and rare books.",
    ),
    (
        "the first bread is ready by six .<n>the baker lights ovens at four in the morning .<n>the town wakes up .",
        "Every morning the baker lights the oven at four.\nThe first bread is ready by six.",
    ),
    ("snow fell .", "The weather turned cold in November and the first snow fell on the hills."),
]


def google_rouge(prediction: str, reference: str) -> dict[str, float]:
    """The reference: rouge-score as the paper's evaluation used it, on newline-separated sentences."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    scores = scorer.score(reference, prediction.replace("<n>", "\n"))
    return {name: 100 * score.fmeasure for name, score in scores.items()}


def test_rouge_matches_rouge_score():
    for prediction, reference in SUMMARIES:
        assert rouge_scores(prediction, reference) == pytest.approx(google_rouge(prediction, reference), abs=1e-9)
    # ROUGE-Lsum differs from ROUGE-L once there are several sentences: the point of splitting at <n>.
    ours = rouge_scores(*SUMMARIES[2])
    assert ours["rougeLsum"] != ours["rougeL"]


# SQuAD v1.1's evaluation script, written out from its definition ------------------------------------------------


def squad_normalize(s: str) -> str:
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = squad_normalize(prediction).split()
    ground_truth_tokens = squad_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_exact(prediction: str, ground_truth: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(ground_truth))


QA_CASES = [
    ("Ada Lovelace", ["Ada Lovelace"]),
    ("the Ada  Lovelace!", ["Ada Lovelace"]),
    ("An apple, a pear", ["apple pear", "the apples"]),
    ("in 1932", ["1932", "in 1932."]),
    ("Denver Broncos won", ["Denver Broncos", "The Broncos"]),
    ("", ["something"]),
    ("The", ["a"]),
    ("Théâtre   du Châtelet", ["théâtre du châtelet"]),
    ("it's 5 o'clock", ["its 5 oclock"]),
    ("Carolina Panthers Carolina", ["Panthers", "Carolina Panthers"]),
]


@pytest.mark.parametrize("prediction, answers", QA_CASES)
def test_qa_scores_follow_squad_v1_1(prediction, answers):
    ours = qa_scores(prediction, answers)
    assert ours["exact_match"] == pytest.approx(100 * max(squad_exact(prediction, a) for a in answers))
    assert ours["f1"] == pytest.approx(100 * max(squad_f1(prediction, a) for a in answers))


def test_gold_answers_take_strings_aliases_and_dataset_shapes():
    reference = TASKS["qa"].reference
    assert reference("Paris") == ["Paris"]
    assert reference(["Paris", "paris, France"]) == ["Paris", "paris, France"]
    assert reference({"text": ["Paris"], "answer_start": [3]}) == ["Paris"]
    assert reference({"aliases": ["Paris", "City of Light"], "value": "Paris"}) == ["Paris", "City of Light"]
    assert reference([]) is None and reference({"text": []}) is None and reference("  ") is None


# classify ----------------------------------------------------------------------------------------------------


def test_macro_f1_and_confusion_matrix_follow_their_definitions():
    golds = ["cat", "dog", "dog", "bird", "cat", "dog", "cat", "fish"]
    predictions = ["cat", "dog", "cat", "cat", "cat", "bird", "dog", "dog"]
    labels = sorted(set(golds) | set(predictions))
    per_label = []
    for label in labels:
        tp = sum(g == p == label for g, p in zip(golds, predictions, strict=True))
        fp = sum(p == label != g for g, p in zip(golds, predictions, strict=True))
        fn = sum(g == label != p for g, p in zip(golds, predictions, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        per_label.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    assert macro_f1(golds, predictions) == pytest.approx(100 * sum(per_label) / len(labels))
    matrix = confusion_matrix(golds, predictions)
    assert matrix["labels"] == labels
    for i, gold in enumerate(labels):
        for j, predicted in enumerate(labels):
            expected = sum(g == gold and p == predicted for g, p in zip(golds, predictions, strict=True))
            assert matrix["matrix"][i][j] == expected


# The report ---------------------------------------------------------------------------------------------------


def test_report_means_and_seeded_bootstrap_intervals():
    records = [
        {"id": str(i), "summary": p, "reference": r, "metrics": rouge_scores(p, r), "input_tokens": 10 * i}
        for i, (p, r) in enumerate(SUMMARIES)
    ] + [{"id": "bad", "error": "no reference."}]
    report = build_report(TASKS["summarize"], "m", records, {"strategy": "chunk"})
    assert report["documents"] == 5 and report["failed"] == 1 and report["task"] == "summarize"
    per_doc = [google_rouge(p, r) for p, r in SUMMARIES]
    # The same interval computed independently: resample documents with the seeded generator, take percentiles.
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = [rng.integers(0, len(SUMMARIES), len(SUMMARIES)) for _ in range(BOOTSTRAP_RESAMPLES)]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        column = np.array([scores[name] for scores in per_doc])
        assert report["metrics"][name] == pytest.approx(column.mean())
        expected = np.percentile([column[idx].mean() for idx in draws], [2.5, 97.5])
        assert report["intervals"][name] == pytest.approx(list(expected))
        low, high = report["intervals"][name]
        assert low <= report["metrics"][name] <= high
    assert build_report(TASKS["summarize"], "m", records, {})["intervals"] == report["intervals"]
    nothing = build_report(TASKS["summarize"], "m", records[-1:], {})
    assert nothing["failed"] == 1 and set(nothing["metrics"]) == set(report["metrics"])
    assert all(value is None for value in [*nothing["metrics"].values(), *nothing["intervals"].values()])


# The command ----------------------------------------------------------------------------------------------------


def scored_files(tmp_path, references: list, predictions: list) -> tuple:
    """refs.jsonl and run.jsonl for `eval --predictions`, one line per row (a dict, or a line as it is)."""
    paths = tmp_path / "refs.jsonl", tmp_path / "run.jsonl"
    for path, rows in zip(paths, (references, predictions), strict=True):
        path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return paths


def last_report(stdout: bytes) -> dict:
    lines = stdout.decode().splitlines()
    report = json.loads(lines[-1])
    assert set(report) >= {"task", "model", "documents", "failed", "metrics", "intervals", "settings"}
    return report


@pytest.fixture
def summary_inputs(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [
        {"id": f"doc{i}", "text": LONG_TEXT[: 200 * (i + 1)], "abstract": ref} for i, (_, ref) in enumerate(SUMMARIES)
    ]
    rows.append({"id": "no-ref", "text": LONG_TEXT[:300]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_eval_summarize_end_to_end(bigbird, tiny_models, summary_inputs, tmp_path):
    out = tmp_path / "predictions.jsonl"
    result = bigbird(
        "eval",
        "summarize",
        "-m",
        tiny_models["summarize"],
        "--jsonl",
        summary_inputs,
        "--reference-field",
        "abstract",
        "-o",
        out,
        "--batch-size",
        "2",
        check_rc=1,
    )
    report = last_report(result.stdout)
    assert result.stdout.decode().count("\n") == 1  # with -o, stdout holds the report alone
    records = jsonl(out)
    assert [r["id"] for r in records] == ["doc0", "doc1", "doc2", "doc3", "no-ref"]
    assert "abstract" in records[-1]["error"] and report["failed"] == 1 and report["documents"] == 5
    for record, (_, reference) in zip(records, SUMMARIES, strict=False):
        assert record["reference"] == reference
        assert record["metrics"] == pytest.approx(google_rouge(record["summary"], reference))
    for name, value in report["metrics"].items():
        assert value == pytest.approx(np.mean([r["metrics"][name] for r in records[:4]]))
    assert report["settings"]["generation"]["num_beams"] == 2  # the checkpoint's own setting, as run
    assert "rougeLsum" in result.stderr.decode()  # the table


def test_a_reference_rouge_cannot_count_is_an_error_record_not_a_zero(bigbird, tmp_path):
    """rouge-score keeps only a-z and 0-9: a Chinese or Russian reference scored 0 against any summary, silently
    pulling the mean down. Such a document is an error record saying so; the others are scored as before."""
    references = {
        "en": "Plants make food from light.",
        "zh": "植物通过光合作用制造食物。",
        "ru": "Растения растут.",
        "mixed": "植物 CO2 光合作用",
    }
    inputs, predictions = scored_files(
        tmp_path,
        [{"id": i, "text": "x", "abstract": r} for i, r in references.items()],
        [{"id": i, "summary": r} for i, r in references.items()],
    )
    result = bigbird(
        "eval",
        "summarize",
        "--predictions",
        predictions,
        "--jsonl",
        inputs,
        "--reference-field",
        "abstract",
        check_rc=1,
    )
    report = last_report(result.stdout)
    records = {r["id"]: r for r in map(json.loads, result.stdout.decode().splitlines()[:-1])}
    assert "no word ROUGE can count" in records["zh"]["error"] and "no word ROUGE can count" in records["ru"]["error"]
    for kept in ("en", "mixed"):  # "co2" is a word ROUGE counts
        assert records[kept]["metrics"] == pytest.approx(google_rouge(references[kept], references[kept]))
    assert report["failed"] == 2 and report["metrics"]["rouge1"] == pytest.approx(100.0)
    assert result.stderr.decode().count("no word ROUGE can count") == 2


def test_eval_scores_an_earlier_run_without_a_model(bigbird, summary_inputs, tmp_path):
    predictions = tmp_path / "run.jsonl"
    rows = [
        {"id": f"doc{i}", "model": "someone/else", "input_tokens": 40 + i, "summary": summary}
        for i, (summary, _) in enumerate(SUMMARIES)
    ]
    rows.append({"id": "no-ref", "model": "someone/else", "input_tokens": 7, "summary": "anything ."})
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = bigbird(
        "eval",
        "summarize",
        "--predictions",
        predictions,
        "--jsonl",
        summary_inputs,
        "--reference-field",
        "abstract",
        "-m",
        "no/such-model",
        check_rc=1,
    )
    report = last_report(result.stdout)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()[:-1]]
    assert [r["id"] for r in records] == [row["id"] for row in rows] and "error" in records[-1]
    assert report["model"] == "someone/else" and report["failed"] == 1 and report["documents"] == 5
    expected = [google_rouge(summary, reference) for summary, reference in SUMMARIES]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert report["metrics"][name] == pytest.approx(np.mean([scores[name] for scores in expected]))
    for record, scores in zip(records, expected, strict=False):
        assert record["metrics"] == pytest.approx(scores)


def test_eval_classify_with_class_ids_and_a_plot(bigbird, tiny_models, tmp_path):
    inputs = tmp_path / "labelled.jsonl"
    rows = [
        ("I loved it, a wonderful film.", 2),
        ("Terrible, boring and too long.", "negative"),
        ("It was fine, I guess.", 1),
        ("The best thing all year.", "positive"),
        ("Meh.", None),
    ]
    inputs.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    plot = tmp_path / "scores.png"
    result = bigbird("eval", "classify", "-m", tiny_models["classify"], "--jsonl", inputs, "--plot", plot, check_rc=1)
    report = last_report(result.stdout)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()[:-1]]
    golds = [r["reference"] for r in records[:4]]
    assert golds == ["positive", "negative", "neutral", "positive"]  # class ids named by the checkpoint's id2label
    predicted = [r["label"] for r in records[:4]]
    hits = [gold == label for gold, label in zip(golds, predicted, strict=True)]
    assert report["metrics"]["accuracy"] == pytest.approx(100 * np.mean(hits))
    assert report["metrics"]["macro_f1"] == pytest.approx(macro_f1(golds, predicted))
    assert report["confusion_matrix"] == confusion_matrix(golds, predicted) and report["failed"] == 1
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_eval_qa_predictions_take_dataset_answer_shapes(bigbird, tmp_path):
    inputs = tmp_path / "dev.jsonl"
    gold = [{"text": ["Ada Lovelace"], "answer_start": [0]}, ["1932", "in 1932"], "Paris"]
    inputs.write_text("".join(json.dumps({"id": str(i), "answers": g}) + "\n" for i, g in enumerate(gold)))
    predictions = tmp_path / "answers.jsonl"
    answers = ["Lovelace", "in 1932.", "the city of Paris"]
    predictions.write_text("".join(json.dumps({"id": str(i), "answer": a}) + "\n" for i, a in enumerate(answers)))
    result = bigbird("eval", "qa", "--predictions", predictions, "--jsonl", inputs, "-q", check_rc=0)
    report = last_report(result.stdout)
    aliases = [["Ada Lovelace"], ["1932", "in 1932"], ["Paris"]]
    for name, reference in (("exact_match", squad_exact), ("f1", squad_f1)):
        expected = [100 * max(reference(a, g) for g in golds) for a, golds in zip(answers, aliases, strict=True)]
        assert report["metrics"][name] == pytest.approx(np.mean(expected))


@pytest.mark.parametrize(
    "task, field", [("summarize", "--reference-field"), ("qa", "--answer-field"), ("classify", "--label-field")]
)
def test_eval_help_has_the_task_options_and_its_own(task, field):
    result = CliRunner().invoke(app, ["eval", task, "--help"], terminal_width=200)
    assert result.exit_code == 0 and f"Example: bigbird eval {task} " in result.output
    task_help = CliRunner().invoke(app, [task, "--help"], terminal_width=200).output
    task_options = set(re.findall(r"--[a-z][a-z0-9-]+", task_help))
    assert task_options <= set(re.findall(r"--[a-z][a-z0-9-]+", result.output))
    for option in (field, "--predictions", "--plot"):
        assert option in result.output


# Missing optional packages: one sentence and exit 2, before any model loads ------------------------------------


def test_missing_matplotlib_or_rouge_score_is_a_usage_error(monkeypatch, tmp_path):
    runner = CliRunner()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError
    args = ["eval", "classify", "--text", "x", "-m", str(tmp_path / "not-a-model"), "--plot", str(tmp_path / "p.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--plot needs matplotlib" in result.output and "Traceback" not in result.output
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    eval_metrics._rouge_scorer.cache_clear()
    try:
        result = runner.invoke(app, ["eval", "summarize", "--text", "x", "-m", str(tmp_path / "not-a-model")])
    finally:
        eval_metrics._rouge_scorer.cache_clear()
    assert result.exit_code == 2 and "needs Google's rouge-score" in result.output


@pytest.mark.parametrize("path", ["folder", "missing/p.png", "p.txt"])
def test_a_plot_that_cant_be_written_is_refused_before_the_run(path, tmp_path):
    """Found after a run of days, it would cost the report; matplotlib would also write `folder.png` for a folder."""
    (tmp_path / "folder").mkdir()
    args = ["eval", "classify", "--text", "x", "-m", str(tmp_path / "not-a-model"), "--plot", str(tmp_path / path)]
    result = CliRunner().invoke(app, args)
    expected = {"folder": "is a folder", "missing/p.png": "does not exist", "p.txt": "give a file ending in one of"}
    assert result.exit_code == 2 and expected[path] in result.output and "not-a-model" not in result.output
    assert not (tmp_path / "folder.png").exists()


@pytest.mark.parametrize(
    "case",
    [
        "no inputs",
        "missing inputs",
        "empty predictions",
        "unreadable predictions",
        "unreadable labels",
        "-o an input",
        "-o the predictions",
        "class ids without --model",
    ],
)
def test_eval_predictions_that_cant_be_scored_are_one_sentence_and_exit_2(case, tmp_path):
    """--predictions problems found before scoring go through the CLI's one error table, like every command's."""
    inputs, predictions = tmp_path / "dev.jsonl", tmp_path / "run.jsonl"
    inputs.write_text(json.dumps({"id": "0", "label": "pos"}) + "\n")
    predictions.write_text(json.dumps({"id": "0", "label": "pos"}) + "\n")
    args = ["eval", "classify", "--predictions", str(predictions), "--jsonl", str(inputs), "-q"]
    expected = {
        "no inputs": "--predictions needs the references too",
        "empty predictions": "holds no JSONL records to score.",
        "unreadable predictions": "could not be read",
        "unreadable labels": "its labels can't be read",
        "missing inputs": "does not exist",
        "-o an input": "is also an input",
        "-o the predictions": "is the --predictions file",
        "class ids without --model": "the references hold class ids: give --model",
    }[case]
    if case == "no inputs":
        args = args[:4] + ["-q"]
    elif case == "missing inputs":
        args[5] = str(tmp_path / "nowhere.jsonl")
    elif case == "-o an input":
        args += ["-o", str(inputs)]
    elif case == "-o the predictions":
        args += ["-o", str(predictions)]
    elif case == "class ids without --model":
        inputs.write_text(json.dumps({"id": "0", "label": 1}) + "\n")
    elif case == "empty predictions":
        predictions.write_text("")
    elif case == "unreadable predictions":
        predictions.unlink()
        predictions.mkdir()
    else:
        args += ["-m", str(tmp_path / "not-a-model")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert inputs.read_text().startswith('{"id": "0", "label": ')  # -o never emptied an input


def test_a_report_without_the_resolved_settings_says_why(tiny_models, monkeypatch):
    """Where this process can't build the Task (on Ray, a checkpoint only the workers have), the report goes without
    its generation settings and a warning says why; otherwise a dry run gives the settings the Task resolves, and
    a Task this process already built gives them without another build."""
    from bigbird.tasks import SummarizeTask, TaskError
    from bigbird_cli.commands import eval as eval_command

    warnings: list[str] = []
    monkeypatch.setattr(eval_command, "warn", warnings.append)

    def unavailable(dry_run=None):
        raise TaskError("/models/pegasus is not a checkpoint directory and not a Hub model id.")

    assert eval_command._resolved_settings(None, unavailable) == {}
    assert warnings == [
        "the report lacks the task's resolved settings: /models/pegasus is not a checkpoint "
        "directory and not a Hub model id."
    ]

    def summarize(dry_run=None):
        return SummarizeTask(str(tiny_models["summarize"]), num_beams=3, dry_run=dry_run)

    assert eval_command._resolved_settings(None, summarize)["generation"]["num_beams"] == 3
    ran = summarize(dry_run=True)
    assert eval_command._resolved_settings(ran, unavailable)["generation"]["num_beams"] == 3  # no second build


def test_eval_dry_run_is_refused(tmp_path):
    args = ["eval", "summarize", "--text", "x", "-m", str(tmp_path / "not-a-model"), "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--dry-run makes none" in result.output


def test_class_ids_as_text_or_whole_floats_are_named_and_unknown_ids_are_error_records(bigbird, tiny_models, tmp_path):
    """CSV columns are read as text and a parquet column with a gap holds floats: "2" and 1.0 are class ids too,
    "neutral" stays a name, and an id the model doesn't have is an error record that says so."""
    inputs, predictions = tmp_path / "dev.csv", tmp_path / "run.jsonl"
    inputs.write_text("id,text,label\na,x,2\nb,x,neutral\nc,x,7\n")
    run = [{"id": "a", "label": "positive"}, {"id": "b", "label": "neutral"}, {"id": "c", "label": "neutral"}]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in run))
    args = ("eval", "classify", "-m", tiny_models["classify"], "--predictions", predictions, "-q")
    result = bigbird(*args, "--dataset", inputs, check_rc=1)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()[:-1]]
    assert [r.get("reference") for r in records] == ["positive", "neutral", None]
    assert records[2]["error"] == "the reference '7' is no class id of the model, whose labels are 0 to 2."
    assert last_report(result.stdout)["metrics"]["accuracy"] == pytest.approx(100.0)
    floats = tmp_path / "dev.jsonl"
    floats.write_text(
        "".join(json.dumps({"id": i, "label": v}) + "\n" for i, v in [("a", 2.0), ("b", 1.0), ("c", 0.0)])
    )
    result = bigbird(*args, "--jsonl", floats, check_rc=0)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()[:-1]]
    assert [r["reference"] for r in records] == ["positive", "neutral", "negative"]


def test_a_repeated_id_in_predictions_is_scored_once(bigbird, tmp_path):
    inputs, predictions = tmp_path / "dev.jsonl", tmp_path / "run.jsonl"
    inputs.write_text("".join(json.dumps({"id": i, "answers": "Paris"}) + "\n" for i in "ab"))
    run = [{"id": "a", "answer": "Paris"}, {"id": "b", "answer": "Rome"}, {"id": "a", "answer": "Paris"}]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in run))
    result = bigbird("eval", "qa", "--predictions", predictions, "--jsonl", inputs, "-q", check_rc=1)
    report = last_report(result.stdout)
    assert report["metrics"]["exact_match"] == pytest.approx(50.0)  # a and b once each, not a twice
    assert report["documents"] == 3 and report["failed"] == 1
    assert f"a: the id is repeated in {predictions}: only its first record is scored." in result.stderr.decode()
    # Records naming no model: the error record says what the report says ("None" was str() of the missing name).
    [repeated] = [r for r in jsonl(result.stdout) if "error" in r]
    assert repeated["model"] == report["model"] == "unknown"


def test_resuming_eval_on_a_plain_task_run_is_refused(bigbird, tmp_path):
    """Those records carry no scores: skipped as done, they were all counted as failed, with no word why."""
    inputs, output = tmp_path / "dev.jsonl", tmp_path / "run.jsonl"
    inputs.write_text(json.dumps({"id": "a", "text": "Paris is big.", "question": "Which city?", "answers": "Paris"}))
    output.write_text(json.dumps({"id": "a", "answer": "Paris"}) + "\n")
    result = bigbird("eval", "qa", "-m", "unused", "--jsonl", inputs, "-o", output, "--resume", check_rc=2)
    assert f"score them with `bigbird eval qa --predictions {output}`" in result.stderr.decode()
    assert output.read_text() == json.dumps({"id": "a", "answer": "Paris"}) + "\n"


def test_squad_v2_unanswerable_questions_are_scored_as_its_script_does(bigbird, tmp_path):
    """{"text": [], "answer_start": []} was 'no reference', so a SQuAD v2 dev set could not be scored."""
    inputs, predictions = tmp_path / "dev.jsonl", tmp_path / "run.jsonl"
    gold = {"text": [], "answer_start": []}
    inputs.write_text("".join(json.dumps({"id": i, "answers": gold}) + "\n" for i in "ab"))
    predictions.write_text(
        json.dumps({"id": "a", "answer": ""}) + "\n" + json.dumps({"id": "b", "answer": "Paris"}) + "\n"
    )
    report = last_report(
        bigbird("eval", "qa", "--predictions", predictions, "--jsonl", inputs, "-q", check_rc=0).stdout
    )
    # SQuAD v2's script: no gold answer counts as [""], and against it only an empty answer scores.
    expected = [100 * float(squad_normalize(answer) == "") for answer in ("", "Paris")]
    assert report["metrics"]["exact_match"] == pytest.approx(np.mean(expected))
    assert report["metrics"]["f1"] == pytest.approx(np.mean(expected)) and report["failed"] == 0


def test_eval_with_o_dash_writes_the_records_to_stdout(bigbird, tiny_models, tmp_path):
    """`-o -` means stdout, as in every command; eval read a file named '-' back and raised FileNotFoundError."""
    inputs = tmp_path / "dev.jsonl"
    inputs.write_text(json.dumps({"id": "a", "text": "A good film.", "label": "positive"}) + "\n")
    result = bigbird(
        "eval", "classify", "-m", tiny_models["classify"], "--jsonl", inputs, "-o", "-", "-q", check_rc=None
    )
    lines = result.stdout.decode().splitlines()
    assert b"Traceback" not in result.stderr and len(lines) == 2
    assert json.loads(lines[0])["id"] == "a" and last_report(result.stdout)["documents"] == 1


def test_predictions_that_are_no_text_or_no_record_are_error_records(bigbird, tmp_path):
    """A number or null as the answer was a traceback (AttributeError in the scorer), and a line that is not a
    record (a cut-off last line) was skipped without a word; a reference of the wrong type was called missing."""
    rows = [
        {"id": "ok", "answers": ["Paris"]},
        {"id": "number", "answers": ["7"]},
        {"id": "null", "answers": ["x"]},
        {"id": "typed", "answers": 7},
    ]
    lines = [
        '{"id": "ok", "answer": "Paris"}',
        '{"id": "number", "answer": 7}',
        '{"id": "null", "answer": null}',
        '{"id": "typed", "answer": "7"}',
        "not json",
        '{"id": "cut", "ans',
    ]
    inputs, predictions = scored_files(tmp_path, [{"text": "t", **row} for row in rows], lines)
    result = bigbird("eval", "qa", "--predictions", predictions, "--jsonl", inputs, check_rc=1)
    report = last_report(result.stdout)
    records = {r["id"]: r for r in map(json.loads, result.stdout.decode().splitlines()[:-1])}
    assert records["ok"]["metrics"] == {"exact_match": 100.0, "f1": 100.0}
    assert records["number"]["error"] == "the record's 'answer' is 7, not a text to score."
    assert records["null"]["error"] == "the record's 'answer' is None, not a text to score."
    assert records["typed"]["error"].startswith("the 'answers' field holds 7, which is no answer")
    assert records["run.jsonl:5"]["error"] == records["run.jsonl:6"]["error"].replace("6", "5")
    assert report["documents"] == 6 and report["failed"] == 5
    assert "Traceback" not in result.stderr.decode()


def test_predictions_score_a_repeated_reference_id_against_its_first_reference(bigbird, tmp_path):
    """As a model run does (the repeat is an error record there); the last one won, silently."""
    references = [{"id": "x", "text": "t", "label": "neg"}, {"id": "x", "text": "t", "label": "pos"}]
    inputs, predictions = scored_files(tmp_path, references, [{"id": "x", "label": "pos"}])
    result = bigbird("eval", "classify", "--predictions", predictions, "--jsonl", inputs, check_rc=0)
    assert last_report(result.stdout)["metrics"]["accuracy"] == 0.0
    assert "1 ids are repeated in the inputs" in result.stderr.decode()


def test_eval_into_a_reader_that_goes_away_exits_141(bigbird, tmp_path):
    """`bigbird eval ... | head -1`: exit 1 (documents failed) from click's own broken-pipe handling."""
    ids = [str(i) for i in range(3000)]
    references = [{"id": i, "text": "t", "label": "pos"} for i in ids]
    inputs, predictions = scored_files(tmp_path, references, [{"id": i, "label": "pos"} for i in ids])
    command = [bigbird_executable(), "eval", "classify", "--predictions", str(predictions), "--jsonl", str(inputs)]
    shell = " ".join(map(shlex.quote, command)) + " | head -1 >/dev/null; echo ${PIPESTATUS[0]}"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, timeout=120)
    assert done.stdout.decode().strip() == "141", done.stderr.decode()


def test_predictions_say_which_run_options_they_ignore(bigbird, tmp_path):
    """--shard 0/2 with --predictions still scored every record, without a word."""
    inputs, predictions = scored_files(
        tmp_path, [{"id": "x", "text": "t", "label": "pos"}], [{"id": "x", "label": "pos"}]
    )
    args = ["eval", "classify", "--predictions", predictions, "--jsonl", inputs, "--shard", "0/2"]
    result = bigbird(*args, check_rc=0)
    assert f"--predictions scores {predictions} as it is: --shard only apply to a model run." in result.stderr.decode()


def test_predictions_of_another_command_are_one_sentence(bigbird, tmp_path):
    """One "the record has no 'answer' field" error per record, exit 1; --resume already refused such a file."""
    references, made = [{"id": "x", "text": "t", "answers": ["Paris"]}], [{"id": "x", "summary": "Paris is big."}]
    inputs, predictions = scored_files(tmp_path, references, made)
    result = bigbird("eval", "qa", "--predictions", predictions, "--jsonl", inputs, check_rc=2)
    assert "holds records of `bigbird summarize`, not of `bigbird qa`" in result.stderr.decode()


def test_a_gold_label_the_model_does_not_have_is_an_error_record(bigbird, tiny_models, tmp_path):
    """A typo ("POSITIVE") could never be predicted and was scored wrong without a word; "1.0" (a CSV written by
    pandas from a column with a gap) was taken as a label name."""
    rows = [("typo", "POSITIVE", "positive"), ("float-text", "1.0", "neutral"), ("name", "positive", "positive")]
    inputs, predictions = scored_files(
        tmp_path,
        [{"id": i, "text": "t", "label": gold} for i, gold, _ in rows],
        [{"id": i, "label": p} for i, _, p in rows],
    )
    args = ["eval", "classify", "--predictions", predictions, "--jsonl", inputs, "-m", tiny_models["classify"]]
    result = bigbird(*args, check_rc=1)
    records = {r["id"]: r for r in map(json.loads, result.stdout.decode().splitlines()[:-1])}
    assert records["typo"]["error"].startswith("the reference 'POSITIVE' is no label of the model, whose labels are")
    assert records["float-text"]["reference"] == "neutral" and records["float-text"]["metrics"]["accuracy"] == 100
    assert last_report(result.stdout)["metrics"]["accuracy"] == 100.0


def test_eval_of_documents_that_can_carry_no_reference_is_refused_before_the_model_loads(bigbird, tmp_path):
    """--text and plain files have no fields: the model loaded, then every document failed for want of one."""
    result = bigbird("eval", "classify", "--text", "Plants grow.", "-m", tmp_path / "not-a-model", check_rc=2)
    assert "eval needs references: give the documents with --jsonl or --dataset, whose 'label' field holds them." in (
        result.stderr.decode()
    )


def test_class_ids_as_text_need_the_model_unless_the_predictions_name_labels_so(bigbird, tmp_path):
    """A CSV's "1" was scored as a label name against "positive" (accuracy 0); the number 1 was already refused."""
    inputs, predictions = scored_files(
        tmp_path, [{"id": "x", "text": "t", "label": "1"}], [{"id": "x", "label": "positive"}]
    )
    result = bigbird("eval", "classify", "--predictions", predictions, "--jsonl", inputs, check_rc=2)
    assert "the references hold class ids: give --model" in result.stderr.decode()
    predictions.write_text('{"id": "x", "label": "1"}\n')  # a model whose labels are "0" and "1"
    result = bigbird("eval", "classify", "--predictions", predictions, "--jsonl", inputs, check_rc=0)
    assert last_report(result.stdout)["metrics"]["accuracy"] == 100.0
