"""`bigbird qa`: extractive question answering over long documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from ..options import CommonOptions, task_command
from ..runner import TaskSpec, runs

if TYPE_CHECKING:
    from bigbird.tasks.documents import Document

DEFAULT_MODEL = "google/bigbird-base-trivia-itc"


@task_command("qa", DEFAULT_MODEL)
def build(
    common: CommonOptions,
    question: Annotated[
        list[str] | None,
        typer.Option(
            "--question",
            "-Q",
            help="The question, for every document; it wins over the records' question field. Repeat it to ask"
            " several: one record per (document, question), ids ID#q1, ID#q2, ...",
            show_default=False,
        ),
    ] = None,
    questions_file: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            help="A file of questions, one a line, each asked of every document (as -Q repeated).",
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
    piece_spans: Annotated[
        bool,
        typer.Option(
            "--piece-spans",
            help="Answers are the token pieces' own characters (`ved`), not the whole words they touch (`approved`).",
        ),
    ] = False,
    max_seq_len: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Longest window, question and special tokens included [default: the model's].",
            show_default=False,
        ),
    ] = None,
) -> TaskSpec:
    """Answer a question from each document: `answer`, `score`, and character offsets
    `start`/`end` into the document (text[start:end] == answer).

    Long documents are read in overlapping windows; answers are whole words, and the same answer found in
    several windows adds up its scores, as in the transformers question-answering pipeline.

    **Example:** bigbird qa report.txt --question "Who wrote the report?"

    **Example:** bigbird qa contract.txt -Q "Who pays?" -Q "When does it end?"

    **Example:** bigbird qa --jsonl questions.jsonl -o answers.jsonl  (records with text and question, or a list)
    """
    from bigbird.tasks import QATask
    from bigbird.tasks.qa import one_per_question, read_questions

    if any(not q.strip() for q in question or []):
        raise UsageError("--question is empty.")
    asked = list(question or [])
    if questions_file is not None:
        asked += read_questions(questions_file)
    # One question asked of every document is the task's own; several make one unit of work per question.
    several = asked if len(asked) > 1 or questions_file is not None else None
    question = asked[0] if asked and several is None else None
    if not asked and not (common.jsonl or common.dataset):
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
            align_to_words=not piece_spans,
            max_seq_len=max_seq_len,
        )

    def expand(docs: Iterator[Document]) -> Iterator[Document]:
        return one_per_question(docs, several, question_field)

    return TaskSpec(
        "qa",
        common,
        make_task,
        extra_fields=() if asked else (question_field,),
        expand=expand,
        unscorable=None
        if several is None
        else "eval qa scores one question per document: give one --question, or records with their own",
        unscorable_document=None if asked else lambda doc: several_asked(doc, question_field),
    )


def several_asked(doc: Document, question_field: str) -> str | None:
    """Why eval can't score a record that asks a list of questions (its one reference answers one), or None."""
    asked = doc.fields.get(question_field)
    if not isinstance(asked, list) or len(asked) < 2:
        return None
    return f"eval qa scores one question per document, and this record's {question_field!r} asks {len(asked)}"


command = runs(build)
