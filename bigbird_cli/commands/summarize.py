"""`bigbird summarize`: abstractive summaries of long documents with BigBirdPegasus."""

from __future__ import annotations

from typing import Annotated

import typer

from ..options import CommonOptions, task_command
from ..runner import run_command

DEFAULT_MODEL = "google/bigbird-pegasus-large-arxiv"


@task_command("summarize", DEFAULT_MODEL)
def command(
    common: CommonOptions,
    num_beams: Annotated[int | None, typer.Option(min=1, help="Beam width [default: the checkpoint's].")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest summary in tokens [default: the checkpoint's max_length].")
    ] = None,
    min_new_tokens: Annotated[
        int | None, typer.Option(min=0, help="Shortest summary in tokens [default: the checkpoint's min_length].")
    ] = None,
    length_penalty: Annotated[
        float | None, typer.Option(help="Beam score length exponent; above 1 favours longer summaries.")
    ] = None,
    no_repeat_ngram_size: Annotated[
        int | None, typer.Option(min=0, help="Never repeat an n-gram of this size [default: the checkpoint's].")
    ] = None,
) -> None:
    """Summarize documents: one JSONL record with a `summary` per document.

    Documents longer than the model's window (4096 tokens) are summarized in chunks, then the chunk summaries
    are summarized together (--strategy truncate cuts them at the window instead).

    **Example:** bigbird summarize papers/ --batch-size 4 -o summaries.jsonl
    """
    import math

    from core.tasks import SummarizeTask

    from ..errors import EXIT_USAGE
    from ..output import error

    problem = None
    if length_penalty is not None and not math.isfinite(length_penalty):
        problem = f"--length-penalty takes a finite number, not {length_penalty}."
    elif min_new_tokens is not None and max_new_tokens is not None and min_new_tokens > max_new_tokens:
        problem = f"--min-new-tokens {min_new_tokens} is more than --max-new-tokens {max_new_tokens}."
    if problem:
        error(problem)
        raise typer.Exit(EXIT_USAGE)

    def make_task() -> SummarizeTask:
        return SummarizeTask(
            common.model,
            **common.task_settings(),
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )

    raise typer.Exit(run_command("summarize", common, make_task))
