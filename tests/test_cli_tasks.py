"""Every task end to end through the installed `bigbird` command, checked against the core Python API."""

from __future__ import annotations

import json

import pytest
from conftest import LONG_TEXT, jsonl

from bigbird.tasks import ClassifyTask, MaskTask, QATask, SummarizeTask
from bigbird.tasks.documents import Inputs

QUESTION = "When is the bread ready?"
COMMON_KEYS = ["id", "source", "model", "input_tokens", "truncated", "chunks"]

# name → (checkpoint, CLI arguments after the input, Python task factory, task fields every record has)
CASES = {
    "summarize": ("summarize", ["summarize"], lambda m: SummarizeTask(m), ["summary"]),
    "qa": ("qa", ["qa", "-Q", QUESTION, "--top-k", "2"], lambda m: QATask(m, question=QUESTION, top_k=2), ["answer"]),
    "pegasus-qa": ("pegasus-qa", ["qa", "-Q", QUESTION], lambda m: QATask(m, question=QUESTION), ["answer"]),
    "classify": ("classify", ["classify"], lambda m: ClassifyTask(m), ["label", "score", "scores"]),
    "pegasus-classify": (
        "pegasus-classify",
        ["classify", "--top-k", "1"],
        lambda m: ClassifyTask(m, top_k=1),
        ["label"],
    ),
    "mask": ("mask", ["mask", "--top-k", "3"], lambda m: MaskTask(m, top_k=3), ["predictions"]),
}

MASKED = [
    {"id": "short", "text": "The museum opened a new [MASK] with paintings."},
    {"id": "two", "text": "Every [MASK] the baker lights the oven at four and the bread is [MASK] by six."},
    {"id": "long", "text": "The [MASK] carries sediment. " + LONG_TEXT + " The first snow fell on the [MASK]."},
]


def assert_same_records(cli: list[dict], api: list[dict]) -> None:
    """Same records (as JSON would carry them): strings and ints exactly, floats to 5 decimals; `seconds` (wall
    time) only present and non-negative in each."""
    for record in [*cli, *api]:
        assert record.pop("seconds") >= 0 and record["attention"] in ("block_sparse", "original_full")
    assert _rounded(cli) == _rounded(json.loads(json.dumps(api)))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@pytest.fixture(scope="module")
def masked_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("masked") / "masked.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MASKED))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_cli_agrees_with_python_api(case, bigbird, tiny_models, corpus, masked_jsonl):
    checkpoint, args, make_task, fields = CASES[case]
    model = str(tiny_models[checkpoint])
    inputs = Inputs(jsonl=[str(masked_jsonl)]) if case == "mask" else Inputs(paths=[str(corpus)])
    source = ["--jsonl", masked_jsonl] if case == "mask" else [corpus]

    result = bigbird(*args, *source, "-m", model, check_rc=0)
    records = jsonl(result.stdout)

    task = make_task(model)
    docs = list(inputs.open())
    expected = [task([doc])[0] for doc in docs]
    assert_same_records(records, expected)
    texts = {doc.id: doc.text for doc in docs}
    for record in records:
        for answer in [record, *record.get("answers", [])] if "answer" in record else []:
            assert texts[record["id"]][answer["start"] : answer["end"]] == answer["answer"] != ""
    for record in records:
        assert list(record)[: len(COMMON_KEYS)] == COMMON_KEYS
        assert all(field in record for field in fields) and "error" not in record
        assert record["model"] == model
    by_id = {r["id"]: r for r in records}
    long_id = "long" if case == "mask" else "long.md"
    assert by_id[long_id]["chunks"] > 1 and not by_id[long_id]["truncated"]
    assert result.stderr.decode().count("\n") == 1  # the summary line only: no progress bar off a terminal


@pytest.mark.parametrize("case", ["summarize", "qa", "mask"])
def test_quantize_int8_agrees_with_python_api(case, bigbird, tiny_models, corpus, masked_jsonl):
    """--quantize int8 reaches the task: the CLI's records are the quantized Python task's records."""
    checkpoint, args, _, fields = CASES[case]
    model = str(tiny_models[checkpoint])
    inputs = Inputs(jsonl=[str(masked_jsonl)]) if case == "mask" else Inputs(paths=[str(corpus)])
    source = ["--jsonl", masked_jsonl] if case == "mask" else [corpus]
    records = jsonl(bigbird(*args, *source, "-m", model, "--quantize", "int8", check_rc=0).stdout)

    own = {"summarize": {}, "qa": {"question": QUESTION, "top_k": 2}, "mask": {"top_k": 3}}[case]
    task = {"summarize": SummarizeTask, "qa": QATask, "mask": MaskTask}[case](model, quantize="int8", **own)
    # Every linear layer runs int8 and holds no float weights (a task only infers: a quarter of the memory).
    linear = [layer for layer in task.model.modules() if hasattr(layer, "int8")]
    assert linear and all(layer.int8 is not None and layer.weight.is_meta for layer in linear)
    assert_same_records(records, [task([doc])[0] for doc in inputs.open()])
    assert all(field in r for r in records for field in fields)


def test_quantize_int8_refuses_other_dtypes(bigbird, tiny_models):
    result = bigbird(
        "mask", "--text", "a [MASK] b", "-m", tiny_models["mask"], "--quantize", "int8", "--dtype", "float16"
    )
    assert result.returncode == 2
    assert "--quantize int8 runs on the CPU from float32 weights" in result.stderr.decode()


def test_quantize_int8_without_a_working_int8_kernel_is_one_sentence(bigbird, tiny_models):
    """torch's int8 ops are private: where they are missing or off, --quantize int8 says so and exits 2."""
    args = ("mask", "--text", "a [MASK] b", "-m", tiny_models["mask"], "--quantize", "int8")
    result = bigbird(*args, env={"BIGBIRD_PRIVATE_OPS": "0"})
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "no working int8 kernel" in stderr and "Traceback" not in stderr
