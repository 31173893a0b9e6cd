"""`bigbird summarize`: abstractive summaries of long documents with BigBirdPegasus."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..options import CommonOptions, task_command
from ..runner import TaskSpec, runs

DEFAULT_MODEL = "google/bigbird-pegasus-large-arxiv"


@task_command("summarize", DEFAULT_MODEL)
def build(
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
    repetition_penalty: Annotated[
        float | None,
        typer.Option(min=0.0, help="Above 1, tokens already used become less likely [default: the checkpoint's]."),
    ] = None,
    do_sample: Annotated[
        bool | None,
        typer.Option(
            "--do-sample/--no-do-sample",
            help="Sample tokens instead of searching for the likeliest [default: the checkpoint's, usually off].",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="With --do-sample: below 1 sharpens, above 1 flattens the distribution.")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(min=0, help="With --do-sample: draw from the k likeliest tokens (0: all) [default: 50]."),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="With --do-sample: draw from the likeliest tokens holding this mass."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="With --do-sample: same seed, same summaries, whatever the batch size or run (each document draws "
            "from its own generator, seeded from SEED and its id).",
            show_default=False,
        ),
    ] = None,
    num_return_sequences: Annotated[
        int | None,
        typer.Option(min=1, help="Summaries per document, in a `summaries` list (needs beams or --do-sample)."),
    ] = None,
) -> TaskSpec:
    """Summarize documents: one JSONL record with a `summary` per document.

    Documents longer than the model's window (4096 tokens) are summarized in chunks, then the chunk summaries
    are summarized together (--strategy truncate cuts them at the window instead).

    **Example:** bigbird summarize papers/ --batch-size 4 -o summaries.jsonl

    **Example:** bigbird summarize papers/ --do-sample --top-p 0.9 --seed 1
    """
    import math

    from bigbird.tasks import SummarizeTask

    if length_penalty is not None and not math.isfinite(length_penalty):
        raise UsageError(f"--length-penalty takes a finite number, not {length_penalty}.")
    if min_new_tokens is not None and max_new_tokens is not None and min_new_tokens > max_new_tokens:
        raise UsageError(f"--min-new-tokens {min_new_tokens} is more than --max-new-tokens {max_new_tokens}.")

    def make_task(dry_run: bool | None = None) -> SummarizeTask:
        return SummarizeTask(
            common.model,
            **common.task_settings(dry_run=dry_run),
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            num_return_sequences=num_return_sequences,
        )

    return TaskSpec("summarize", common, make_task)


command = runs(build)
