"""`bigbird finetune classify|qa|summarize`: train a checkpoint on labelled documents (bigbird.training does it).

Like every command it raises and lets the root command (`App.invoke`, errors.py's table) say the one sentence and
pick the exit code; Ctrl-C and SIGTERM stop it in order (`runner.sigterm_stops_in_order`), keeping the last saved
state for `--resume`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..console import info
from ..errors import Terminated
from ..options import (
    ENGINE,
    INPUT,
    MODEL,
    Command,
    Dataset,
    Device,
    DeviceOption,
    DType,
    Engine,
    EngineName,
    Glob,
    Group,
    IdField,
    Jsonl,
    Quiet,
    RayAddress,
    Split,
    Strategy,
    TextField,
    Threads,
)
from ..runner import by_sigterm, sigterm_stops_in_order

DEFAULT_MODELS = {
    "classify": "google/bigbird-roberta-base",
    "qa": "google/bigbird-base-trivia-itc",
    "summarize": "google/bigbird-pegasus-large-arxiv",
}
# Help panels: the shared ones, and the training loop's own.
DATA, LOOP = INPUT, "Training"

app = typer.Typer(
    name="finetune",
    help="Fine-tune a checkpoint on your documents; OUT_DIR is a checkpoint every task command takes as --model.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    cls=Group,
)


def _option(kind: Any, default: Any, *flags: str, panel: str = LOOP, **kwargs: Any) -> tuple[Any, Any]:
    return Annotated[kind, typer.Option(*flags, rich_help_panel=panel, **kwargs)], default


SHARED: dict[str, tuple[Any, Any]] = {
    "model": _option(
        str | None,
        None,
        "--model",
        panel=MODEL,
        help="Checkpoint to start from (Hub id or folder) [default: the task's, see above].",
        show_default=False,
    ),
    "output": _option(
        Path,
        ...,
        "--output",
        "-o",
        panel=MODEL,
        metavar="OUT_DIR",
        help="Where the trained checkpoint goes (and the resumable state, in OUT_DIR/checkpoint).",
    ),
    # Folders as the task commands take PATHS; a label is the folder a file is in, so classify alone takes them.
    "paths": (
        Annotated[
            list[str] | None,
            typer.Argument(
                metavar="FOLDER",
                help="classify: folders of documents, one subfolder per label (train/positive/*.txt is a "
                "'positive' document; files directly in FOLDER have no label and are left out).",
                show_default=False,
            ),
        ],
        None,
    ),
    # The options every command shares, as options.py declares them.
    "jsonl": (Jsonl, None),
    "dataset": (Dataset, None),
    "split": (Split, "train"),
    "eval_jsonl": _option(
        list[str] | None,
        None,
        "--eval-jsonl",
        panel=DATA,
        metavar="FILE",
        help="Dev records, scored every --eval-steps (repeatable).",
        show_default=False,
    ),
    # Its own flag, not a folder at --eval-jsonl: the task commands refuse a folder given as --jsonl.
    "eval_dir": _option(
        list[str] | None,
        None,
        "--eval-dir",
        panel=DATA,
        metavar="FOLDER",
        help="classify: dev documents, one subfolder per label, as FOLDER (repeatable).",
        show_default=False,
    ),
    "eval_dataset": _option(
        str | None, None, "--eval-dataset", panel=DATA, metavar="NAME_OR_PATH", help="Dev data from a dataset."
    ),
    "eval_split": _option(str, "validation", "--eval-split", panel=DATA, help="Split of --eval-dataset."),
    "glob": (Glob, None),
    "text_field": (TextField, "text"),
    "id_field": (IdField, "id"),
    "device": (DeviceOption, Device.cpu),
    # Not options.WeightsDType: training keeps float32 weights and autocasts, which that option's help would deny.
    "dtype": _option(
        DType | None,
        None,
        "--dtype",
        panel=MODEL,
        help="bfloat16: autocast over float32 weights "
        "(fast where the CPU or GPU computes bfloat16 natively) [default: float32].",
        show_default=False,
    ),
    "threads": (Threads, None),
    "batch_size": _option(int, 8, "--batch-size", min=1, help="Examples a forward pass."),
    "accumulate": _option(
        int,
        1,
        "--accumulate",
        min=1,
        help="Forward passes an optimizer step (the step's batch is --batch-size × --accumulate).",
    ),
    "epochs": _option(int, 3, "--epochs", min=1, help="Passes over the training examples."),
    "max_steps": _option(
        int | None, None, "--max-steps", min=1, help="Optimizer steps, instead of --epochs.", show_default=False
    ),
    "learning_rate": _option(float, 5e-5, "--learning-rate", "--lr", min=0.0, help="AdamW's peak learning rate."),
    "warmup_ratio": _option(
        float,
        0.1,
        "--warmup-ratio",
        min=0.0,
        max=0.99,
        help="Share of the steps the learning rate warms up over, before decaying linearly to 0.",
    ),
    "weight_decay": _option(float, 0.01, "--weight-decay", min=0.0, help="AdamW's weight decay (matrices only)."),
    "seed": _option(int, 0, "--seed", help="The same seed gives the same model, bit for bit, on one machine."),
    "max_length": _option(
        int | None,
        None,
        "--max-length",
        min=1,
        panel=MODEL,
        help="Tokens a window holds "
        "(saved with the tokenizer, so inference reads the same windows) [default: the "
        "model's].",
        show_default=False,
    ),
    "strategy": _option(
        Strategy,
        Strategy.chunk,
        "--strategy",
        panel=MODEL,
        help="Long documents: every window (chunk) or the first one (truncate).",
    ),
    "gradient_checkpointing": _option(
        bool,
        False,
        "--gradient-checkpointing",
        panel=MODEL,
        help="Recompute each layer in the backward pass: far less memory, ~30% slower.",
    ),
    "eval_steps": _option(
        int | None,
        None,
        "--eval-steps",
        min=1,
        help="Score the dev set every N steps [default: each epoch]; the best checkpoint is the one kept.",
        show_default=False,
    ),
    "save_steps": _option(
        int | None,
        None,
        "--save-steps",
        min=1,
        help="Write the resumable state every N steps [default: each epoch].",
        show_default=False,
    ),
    "resume": _option(bool, False, "--resume", help="Continue the run stopped in OUT_DIR from its last state."),
    "log": _option(
        Path | None, None, "--log", metavar="FILE", help="JSONL of every step and dev score.", show_default=False
    ),
    "engine": (Engine, EngineName.local),
    "workers": _option(int, 2, "--workers", min=1, panel=ENGINE, help="Ray Train workers."),
    "ray_address": (RayAddress, None),
    "quiet": (Quiet, False),
}


def _training_command(task: str, extra: dict[str, tuple[Any, Any]], doc: str) -> Callable[..., None]:
    """A subcommand taking the shared options plus `extra` (the task's fields), handing them to `run`."""

    def command(**options: Any) -> None:
        run(task, options)

    declared = {**SHARED, **extra}
    params = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d) for n, (a, d) in declared.items()
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command


def run(task: str, options: dict[str, Any]) -> None:
    """Build the settings (a bad option is one sentence, exit 2, before any model loads) and train."""
    import sys

    from bigbird.models.heap import reuse_large_blocks
    from bigbird.tasks.documents import DEFAULT_GLOBS, Inputs
    from bigbird.training import Fields, TrainSettings, finetune
    from bigbird.training.progress import reporter

    o = options
    globs = tuple(o["glob"] or ()) or DEFAULT_GLOBS
    dev = None
    if o["eval_jsonl"] or o["eval_dataset"] or o["eval_dir"]:
        dev = Inputs(
            paths=o["eval_dir"] or (),
            globs=globs,
            jsonl=o["eval_jsonl"] or (),
            dataset=o["eval_dataset"],
            split=o["eval_split"],
            text_field=o["text_field"],
            id_field=o["id_field"],
        )
    settings = TrainSettings(
        task=task,
        model=o["model"] or DEFAULT_MODELS[task],
        output=o["output"],
        train=Inputs(
            paths=o["paths"] or (),
            globs=globs,
            jsonl=o["jsonl"] or (),
            dataset=o["dataset"],
            split=o["split"],
            text_field=o["text_field"],
            id_field=o["id_field"],
        ),
        dev=dev,
        fields=Fields(
            label=o.get("label_field", "label"),
            answer=o.get("answer_field", "answers"),
            reference=o.get("reference_field", "summary"),
        ),
        question_field=o.get("question_field", "question"),
        text_pair_field=o.get("text_pair_field"),
        device=o["device"].value,
        dtype=o["dtype"].value if o["dtype"] else None,
        threads=o["threads"],
        batch_size=o["batch_size"],
        accumulate=o["accumulate"],
        epochs=o["epochs"],
        max_steps=o["max_steps"],
        learning_rate=o["learning_rate"],
        weight_decay=o["weight_decay"],
        warmup_ratio=o["warmup_ratio"],
        seed=o["seed"],
        max_length=o["max_length"],
        strategy=o["strategy"].value,
        doc_stride=o.get("doc_stride"),
        max_target_tokens=o.get("max_target_tokens"),
        gradient_checkpointing=o["gradient_checkpointing"],
        eval_steps=o["eval_steps"],
        save_steps=o["save_steps"],
        resume=o["resume"],
        log=o["log"],
    )
    progress = None if o["quiet"] else reporter(sys.stderr)
    try:
        with sigterm_stops_in_order():
            if o["engine"] == EngineName.ray:
                from bigbird.training.engine import finetune_on_ray

                summary = finetune_on_ray(settings, o["workers"], o["ray_address"], progress)
            else:
                reuse_large_blocks()  # training's large activations from the heap: see core/models/heap.py
                summary = finetune(settings, progress)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: raised again saying what the stopped run kept
        terminated = by_sigterm(stop)
        how = "terminated" if terminated else "interrupted"
        said = f"{how}; `--resume -o {settings.output}` continues from the last saved step"
        raise (Terminated if terminated else KeyboardInterrupt)(said) from None
    if not o["quiet"]:
        best = (
            f"; best dev {summary.best['metric']} {summary.best['score']:.4g} at step {summary.best['step']}"
            if summary.best
            else ""
        )
        info(f"finetune: {summary.steps} steps on {summary.examples} examples{best}; the model is in {summary.output}.")


def _field(flag: str, default: str | None, help: str) -> tuple[Any, Any]:
    return _option(
        str | None if default is None else str, default, flag, panel=DATA, help=help, show_default=default is not None
    )


app.command("classify", cls=Command)(
    _training_command(
        "classify",
        {
            "label_field": _field(
                "--label-field",
                "label",
                "Label field: a name, a class id, a list of names (multi-label) or a number (regression).",
            ),
            "text_pair_field": _field("--text-pair-field", None, "Field holding the second text of a pair."),
        },
        """Train a classifier (default start: google/bigbird-roberta-base); the labels come from the data: a
        record's --label-field, or the folder a file is in (`train/positive/*.txt`, `train/negative/*.txt`).

        **Example:** bigbird finetune classify --jsonl train.jsonl --eval-jsonl dev.jsonl -o my-classifier

        **Example:** bigbird finetune classify train/ --eval-dir dev/ -o my-classifier
        """,
    )
)
app.command("qa", cls=Command)(
    _training_command(
        "qa",
        {
            "question_field": _field("--question-field", "question", "Question field of records and rows."),
            "answer_field": _field(
                "--answer-field",
                "answers",
                "Answer field: a text, a list of texts, or "
                'SQuAD\'s {"text": [...], "answer_start": [...]}; empty: no answer.',
            ),
            "doc_stride": _option(
                int | None,
                None,
                "--doc-stride",
                min=0,
                panel=MODEL,
                help="Tokens shared by consecutive windows [default: a quarter of a window].",
                show_default=False,
            ),
        },
        """Train extractive QA (default start: google/bigbird-base-trivia-itc) on the windows inference reads;
        a window without the answer learns the [CLS] null span.

        **Example:** bigbird finetune qa --jsonl squad-like.jsonl -o my-qa
        """,
    )
)
app.command("summarize", cls=Command)(
    _training_command(
        "summarize",
        {
            "reference_field": _field("--reference-field", "summary", "Reference summary field."),
            "max_target_tokens": _option(
                int | None,
                None,
                "--max-target-tokens",
                min=2,
                panel=MODEL,
                help="Tokens of a reference learned [default: the checkpoint's max_length].",
                show_default=False,
            ),
        },
        """Train a summarizer (default start: google/bigbird-pegasus-large-arxiv) on each document's first window.

        **Example:** bigbird finetune summarize --jsonl reports.jsonl --reference-field abstract -o my-summarizer
        """,
    )
)
