"""`bigbird classify`: sequence classification of long documents."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from ..errors import UsageError
from ..options import CommonOptions, task_command
from ..runner import TaskSpec, runs


class Function(str, Enum):
    softmax = "softmax"
    sigmoid = "sigmoid"
    none = "none"


@task_command("classify")
def build(
    common: CommonOptions,
    top_k: Annotated[
        str | None,
        typer.Option(metavar="K|all", help="Labels kept in `scores` [default: all].", show_default=False),
    ] = None,
    function: Annotated[
        Function | None,
        typer.Option(
            help="Scores: softmax, sigmoid (per label) or none (raw logits) [default: from the checkpoint's "
            "problem_type, as the text-classification pipeline].",
            show_default=False,
        ),
    ] = None,
    text_pair_field: Annotated[
        str | None,
        typer.Option(
            help="Field of JSONL records and dataset rows holding the second text of a pair (NLI-style checkpoints).",
            show_default=False,
        ),
    ] = None,
) -> TaskSpec:
    """Classify documents: `label`, its `score`, and `scores` (label →
    probability, labels from the checkpoint's id2label). Needs --model.

    Long documents are split into chunks whose probabilities are averaged.

    **Example:** bigbird classify reviews/ --model ./my-bigbird-sentiment --top-k 2
    """
    from bigbird.tasks import ClassifyTask

    if top_k is not None and top_k != "all" and not (top_k.isdigit() and int(top_k) >= 1):
        raise UsageError(f"--top-k takes a number of labels (1 or more) or all, not {top_k!r}.")

    def make_task(dry_run: bool | None = None) -> ClassifyTask:
        return ClassifyTask(
            common.model,
            **common.task_settings(dry_run=dry_run),
            top_k=None if top_k in (None, "all") else int(top_k),
            function=function.value if function else None,
            text_pair_field=text_pair_field,
        )

    extra_fields = (text_pair_field,) if text_pair_field else ()
    return TaskSpec("classify", common, make_task, extra_fields=extra_fields)


command = runs(build)
