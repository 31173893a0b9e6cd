"""summarize's sampling options end to end through the installed `bigbird` command."""

from __future__ import annotations

import pytest
from conftest import jsonl

from bigbird.tasks import SummarizeTask
from bigbird.tasks.documents import Inputs

SAMPLING = ["--do-sample", "--num-beams", "1", "--top-k", "0", "--max-new-tokens", "8"]


TEXTS = ["Every morning the baker lights the oven at four.", "The museum opened a new wing with paintings."]


def summaries(bigbird, model, corpus, *args) -> dict[str, dict]:
    """Records by id, from a folder, or from TEXTS when `corpus` is None."""
    source = [corpus] if corpus is not None else [arg for text in TEXTS for arg in ("--text", text)]
    records = jsonl(bigbird("summarize", *source, "-m", model, *args, check_rc=0).stdout)
    return {r["id"]: r for r in records}


def test_same_seed_same_summaries_across_runs_and_batch_sizes(bigbird, tiny_models, corpus):
    """Short and long (chunked) documents: each input draws from its own generator, seeded from --seed and the
    document, so batching them together changes nothing."""
    model = tiny_models["summarize"]
    one = summaries(bigbird, model, corpus, *SAMPLING, "--seed", "7", "--batch-size", "1")
    again = summaries(bigbird, model, corpus, *SAMPLING, "--seed", "7", "--batch-size", "3")
    default = summaries(bigbird, model, corpus, *SAMPLING, "--seed", "7")  # as many together as memory holds
    assert {k: r["summary"] for k, r in default.items()} == {k: r["summary"] for k, r in one.items()}
    assert {k: r["summary"] for k, r in one.items()} == {k: r["summary"] for k, r in again.items()}
    assert any(r["chunks"] > 1 for r in one.values())
    other = summaries(bigbird, model, corpus, *SAMPLING, "--seed", "8")
    assert {k: r["summary"] for k, r in one.items()} != {k: r["summary"] for k, r in other.items()}


def test_sampling_options_reach_the_task(bigbird, tiny_models):
    """The CLI's records are the Python task's with the same options and seed."""
    model = str(tiny_models["summarize"])
    args = ["--do-sample", "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--repetition-penalty", "1.2"]
    cli = summaries(bigbird, model, None, *args, "--max-new-tokens", "8", "--seed", "3")
    task = SummarizeTask(
        model, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.2, max_new_tokens=8, seed=3
    )
    api = {r["id"]: r for r in task(list(Inputs(texts=TEXTS).open()))}
    assert {k: r["summary"] for k, r in cli.items()} == {k: r["summary"] for k, r in api.items()}


def test_num_return_sequences_gives_a_summaries_list(bigbird, tiny_models):
    records = summaries(bigbird, tiny_models["summarize"], None, *SAMPLING, "--num-return-sequences", "3")
    for record in records.values():
        assert len(record["summaries"]) == 3 and record["summary"] == record["summaries"][0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-return-sequences", "3", "--num-beams", "2"], "can't exceed num_beams"),
        (["--num-return-sequences", "2", "--num-beams", "1"], "needs do_sample=True"),
        (["--min-new-tokens", "30"], "is more than the 11 new tokens"),  # the checkpoint's max_length is 12
        (["--do-sample", "--temperature", "nan"], "temperature must be positive, not nan"),
        (["--repetition-penalty", "nan"], "--repetition-penalty"),
        (["--batch-size", "99999999999999999999"], "--batch-size"),
    ],
)
def test_impossible_settings_are_usage_errors(bigbird, tiny_models, args, message):
    result = bigbird("summarize", "--text", "The oven is hot.", "-m", tiny_models["summarize"], *args)
    assert result.returncode == 2 and message in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_sampling_options_without_do_sample_are_warned_about(bigbird, tiny_models):
    result = bigbird(
        "summarize",
        "--text",
        "The oven is hot.",
        "-m",
        tiny_models["summarize"],
        "--temperature",
        "0.5",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        check_rc=0,
    )
    assert "warning: --temperature, --top-p, --seed only apply to sampling: add --do-sample." in result.stderr.decode()
