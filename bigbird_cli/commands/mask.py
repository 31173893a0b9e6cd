"""`bigbird mask`: fill-mask predictions for [MASK] tokens in long documents."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..options import CommonOptions, task_command
from ..runner import TaskSpec, runs

DEFAULT_MODEL = "google/bigbird-roberta-base"


@task_command("mask", DEFAULT_MODEL)
def build(
    common: CommonOptions,
    top_k: Annotated[int, typer.Option(min=1, help="Predictions per mask token.")] = 5,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--targets",
            metavar="WORD",
            help="Only predict these words (repeatable, or comma-separated); a word that is no vocabulary entry "
            "stands for its first token. Scores stay those of the full softmax.",
            show_default=False,
        ),
    ] = None,
) -> TaskSpec:
    """Fill in the [MASK] tokens of each document: `predictions` holds, for each mask, the top-k
    {token, token_id, score, sequence}.

    In long documents each mask is predicted from a window centred on it.

    **Example:** bigbird mask --text "Paris is the [MASK] of France."
    """
    from bigbird.tasks import MaskTask

    words = [word.strip() for given in targets or [] for word in given.split(",") if word.strip()]
    if targets and not words:  # `--targets ,` would otherwise mean "no restriction"
        raise UsageError("--targets names no word: give one or more, separated by commas.")

    def make_task(dry_run: bool | None = None) -> MaskTask:
        return MaskTask(common.model, **common.task_settings(dry_run=dry_run), top_k=top_k, targets=words or None)

    return TaskSpec("mask", common, make_task)


command = runs(build)
