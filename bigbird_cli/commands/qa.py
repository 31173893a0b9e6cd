"""`bigbird qa`: extractive question answering over long documents."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..options import CommonOptions, task_command
from ..runner import TaskSpec, runs

DEFAULT_MODEL = "google/bigbird-base-trivia-itc"


@task_command("qa", DEFAULT_MODEL)
def build(
    common: CommonOptions,
    question: Annotated[
        str | None,
        typer.Option(
            "--question",
            "-Q",
            help="The question, for every document; it wins over the records' question field.",
            show_default=False,
        ),
    ] = None,
    question_field: Annotated[str, typer.Option(help="Question field of JSONL records and dataset rows.")] = "question",
    top_k: Annotated[int, typer.Option(min=1, help="Answers per document (more than 1 adds an `answers` list).")] = 1,
    max_answer_tokens: Annotated[int, typer.Option(min=1, help="Longest answer span, in tokens.")] = 30,
    max_question_tokens: Annotated[
        int, typer.Option(min=1, help="Longer questions are cut to this many tokens (the record says so).")
    ] = 64,
    doc_stride: Annotated[
        int | None,
        typer.Option(
            min=0, help="Tokens shared by consecutive windows of a long document [default: a quarter of a window]."
        ),
    ] = None,
    handle_impossible_answer: Annotated[
        bool,
        typer.Option(
            "--handle-impossible-answer",
            help='The "no answer" span competes: when it wins, the answer is "" with its score.',
        ),
    ] = False,
) -> TaskSpec:
    """Answer a question from each document: `answer`, `score`, and character offsets
    `start`/`end` into the document (text[start:end] == answer).

    Long documents are read in overlapping windows and the best span over all of them wins.

    **Example:** bigbird qa report.txt --question "Who wrote the report?"

    **Example:** bigbird qa --jsonl questions.jsonl -o answers.jsonl  (records with text and question)
    """
    from bigbird.tasks import QATask

    if question is not None and not question.strip():
        raise UsageError("--question is empty.")
    if question is None and not (common.jsonl or common.dataset):
        # Files, stdin and --text carry no question field: without -Q every document would fail the same way.
        raise UsageError("qa needs a question: give --question, or --jsonl/--dataset records with a question field.")

    def make_task(dry_run: bool | None = None) -> QATask:
        return QATask(
            common.model,
            **common.task_settings(dry_run=dry_run),
            question=question,
            question_field=question_field,
            top_k=top_k,
            max_answer_tokens=max_answer_tokens,
            max_question_tokens=max_question_tokens,
            doc_stride=doc_stride,
            handle_impossible_answer=handle_impossible_answer,
        )

    return TaskSpec("qa", common, make_task, extra_fields=(question_field,))


command = runs(build)
