"""`bigbird classify`: sequence classification of long documents."""

from __future__ import annotations

from typing import Annotated

import typer

from ..options import CommonOptions, task_command
from ..runner import run_command


@task_command("classify")
def command(
    common: CommonOptions,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="Labels kept in `scores` [default: all].", show_default=False)
    ] = None,
) -> None:
    """Classify documents: `label`, its `score`, and `scores` (label →
    probability, labels from the checkpoint's id2label). Needs --model.

    Long documents are split into chunks whose probabilities are averaged.

    **Example:** bigbird classify reviews/ --model ./my-bigbird-sentiment --top-k 2
    """
    from core.tasks import ClassifyTask

    def make_task() -> ClassifyTask:
        return ClassifyTask(common.model, **common.task_settings(), top_k=top_k)

    raise typer.Exit(run_command("classify", common, make_task))
