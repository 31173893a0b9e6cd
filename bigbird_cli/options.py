"""The options every task command shares (inputs, model, output), declared once.

summarize, qa, classify and mask take the same shared options; writing them out four times would let the
commands drift apart. `task_command` adds them to a command function's signature (Typer reads signatures), and
hands the function one `CommonOptions` in their place.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from bigbird.tasks.documents import DEFAULT_GLOBS, Inputs

from . import errors
from .jsonl import signals_held

INPUT, MODEL, ENGINE, OUTPUT = "Input", "Model", "Engine", "Output"
# Far above any batch that fits in memory; it keeps a mistyped --batch-size a usage error, not a crash.
MAX_BATCH_SIZE = 65536


def _flags_shown_as_flags(params: list[Any]) -> list[Any]:
    """Help lists an on/off option as `--quiet`, not `--quiet <bool>` (Typer's default), --help included."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(typer.core.TyperCommand):
    """Every command's class: on/off options listed as the flags they are, and the libraries imported whole."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_shown_as_flags(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        """Run the command once its options parsed, torch and the library imported first with Ctrl-C and SIGTERM
        held back (delivered right after). A Ctrl-C in the middle of torch's import left it half made, and saying
        the stop imported it again: tracebacks, crashes, or the stop lost and a document failing on a half-made
        numpy."""
        with signals_held():
            errors.failures()  # the error table's modules: torch, the models, the tasks
        return super().invoke(ctx)


class Group(typer.core.TyperGroup):
    """Every command group's class (`bigbird`, `bigbird eval`): on/off options listed as the flags they are."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_shown_as_flags(super().get_params(ctx))


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Quantize(str, Enum):
    int8 = "int8"


class EngineName(str, Enum):
    local = "local"
    ray = "ray"


class Strategy(str, Enum):
    chunk = "chunk"
    truncate = "truncate"


# Options more than one command takes, declared once as module-level aliases (bench and convert use them as they
# are; the task commands get them through `task_command`, from the SHARED table below).
Revision = Annotated[
    str | None,
    typer.Option(help="Hub revision (branch, tag or commit).", rich_help_panel=MODEL, show_default=False),
]
WeightsDType = Annotated[
    DType | None,
    typer.Option(
        help="The dtype to run the model in; float16 and bfloat16 checkpoints are read into float32 unless given.",
        rich_help_panel=MODEL,
        show_default=False,
    ),
]
QuantizeOption = Annotated[
    Quantize | None,
    typer.Option(
        help="Run the linear layers in dynamic int8 (CPU, float32 weights): about twice as fast, with outputs "
        "close to, not equal to, float32's.",
        rich_help_panel=MODEL,
        show_default=False,
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1, help="CPU threads for torch [default: torch's choice].", rich_help_panel=MODEL, show_default=False
    ),
]
OutputFile = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write JSONL here instead of stdout.", rich_help_panel=OUTPUT, show_default=False
    ),
]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress and no summary on stderr.", rich_help_panel=OUTPUT),
]


@dataclass
class CommonOptions:
    """The shared options, as the command received them."""

    paths: list[str]
    text: list[str]
    jsonl: list[str]
    dataset: str | None
    split: str
    glob: list[str]
    text_field: str
    id_field: str
    model: str | None
    revision: str | None
    device: Device
    dtype: DType | None
    quantize: Quantize | None
    threads: int | None
    batch_size: int | None  # None: the task's own default (Task.default_batch_size)
    strategy: Strategy
    engine: EngineName
    ray_address: str | None
    workers: int | None
    cpus_per_worker: float | None
    gpus_per_worker: float | None
    output: Path | None
    resume: bool
    shard: str | None
    quiet: bool
    dry_run: bool

    def task_settings(self, *, dry_run: bool | None = None) -> dict[str, Any]:
        """The keyword arguments every Task takes besides the model name (`dry_run` overrides --dry-run)."""
        return {
            "revision": self.revision,
            "device": self.device.value,
            "dtype": self.dtype.value if self.dtype else None,
            "quantize": self.quantize.value if self.quantize else None,
            "strategy": self.strategy.value,
            "dry_run": self.dry_run if dry_run is None else dry_run,
        }

    def inputs(self, extra_fields: tuple[str, ...] = ()) -> Inputs:
        return Inputs(
            paths=self.paths,
            texts=self.text,
            jsonl=self.jsonl,
            dataset=self.dataset,
            split=self.split,
            globs=tuple(self.glob) or DEFAULT_GLOBS,
            text_field=self.text_field,
            id_field=self.id_field,
            extra_fields=extra_fields,
        )


# The shared options of the task commands, one alias each (bench and convert use some of them as they are).
Paths = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="PATHS", help="Files, folders (searched recursively, see --glob) or - for stdin.", show_default=False
    ),
]
Text = Annotated[
    list[str] | None,
    typer.Option(
        "--text",
        metavar="TEXT",
        help="A document given inline (repeatable).",
        rich_help_panel=INPUT,
        show_default=False,
    ),
]
Jsonl = Annotated[
    list[str] | None,
    typer.Option(
        "--jsonl",
        metavar="FILE|-",
        help="JSONL file of records (- for stdin; repeatable).",
        rich_help_panel=INPUT,
        show_default=False,
    ),
]
Dataset = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        metavar="NAME_OR_PATH",
        help="A Hub dataset or a local json/csv/parquet/text file, streamed.",
        rich_help_panel=INPUT,
    ),
]
Split = Annotated[str, typer.Option(help="Dataset split.", rich_help_panel=INPUT)]
Glob = Annotated[
    list[str] | None,
    typer.Option(
        "--glob",
        metavar="PATTERN",
        help=f"File patterns for folders (repeatable) [default: {' '.join(DEFAULT_GLOBS)}].",
        rich_help_panel=INPUT,
        show_default=False,
    ),
]
TextField = Annotated[str, typer.Option(help="Text field of JSONL records and dataset rows.", rich_help_panel=INPUT)]
IdField = Annotated[str, typer.Option(help="Id field of JSONL records and dataset rows.", rich_help_panel=INPUT)]
DeviceOption = Annotated[Device, typer.Option(help="Where the model runs.", rich_help_panel=MODEL)]
BatchSize = Annotated[
    int,
    typer.Option(
        min=1,
        max=MAX_BATCH_SIZE,
        help="Documents per batch (grouped by length) [default: 1; summarize on the CPU: as many as half the"
        " available memory holds, up to 8, since its records are the same at any batch size (1 with --jsonl -"
        " or --engine ray)].",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
StrategyOption = Annotated[
    Strategy,
    typer.Option(
        help="Documents longer than the model's window: chunk them, or cut them at the window.", rich_help_panel=MODEL
    ),
]
Engine = Annotated[
    EngineName,
    typer.Option(
        help="Where the documents run: this process, or a Ray cluster (pip install 'bigbird-cli[ray]').",
        rich_help_panel=ENGINE,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        metavar="ADDR",
        envvar="RAY_ADDRESS",
        help="Ray cluster to join (HOST:PORT of its head, or auto) [default: a local Ray for the run].",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Ray workers, each with its own copy of the model [default: as many as the cluster holds].",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
CpusPerWorker = Annotated[
    float | None,
    typer.Option(
        min=0.01,
        help="CPUs each Ray worker reserves; fractions share a CPU [default: 1].",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
GpusPerWorker = Annotated[
    float | None,
    typer.Option(
        min=0.01,
        help="GPUs each Ray worker reserves (with --device cuda).",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="With -o: skip ids already done in FILE, append the rest.", rich_help_panel=OUTPUT),
]
ShardOption = Annotated[
    str | None,
    typer.Option(
        metavar="I/N",
        help="Process only slice I of N (0-based): each document goes to the slice a hash of its id picks.",
        rich_help_panel=OUTPUT,
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Tokenize only, without downloading or loading the weights: per document input_tokens, "
        "chunks, truncated and the attention its longest input would run.",
        rich_help_panel=OUTPUT,
    ),
]


def model_option(task: str, default_model: str | None) -> Any:
    """--model: its default and environment variable are the task's."""
    model_help = (
        f"Hub model id or local checkpoint directory [default: {default_model}]."
        if default_model
        else "Hub model id or local checkpoint directory (required)."
    )
    return Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=model_help,
            show_default=False,
            envvar=f"BIGBIRD_MODEL_{task.upper()}",
            rich_help_panel=MODEL,
        ),
    ]


# The shared options as a table, in CommonOptions' order: (declaration, default); --model's is the task's own.
SHARED: dict[str, tuple[Any, Any]] = {
    "paths": (Paths, None),
    "text": (Text, None),
    "jsonl": (Jsonl, None),
    "dataset": (Dataset, None),
    "split": (Split, "train"),
    "glob": (Glob, None),
    "text_field": (TextField, "text"),
    "id_field": (IdField, "id"),
    "model": (None, None),
    "revision": (Revision, None),
    "device": (DeviceOption, Device.cpu),
    "dtype": (WeightsDType, None),
    "quantize": (QuantizeOption, None),
    "threads": (Threads, None),
    "batch_size": (BatchSize, None),
    "strategy": (StrategyOption, Strategy.chunk),
    "engine": (Engine, EngineName.local),
    "ray_address": (RayAddress, None),
    "workers": (Workers, None),
    "cpus_per_worker": (CpusPerWorker, None),
    "gpus_per_worker": (GpusPerWorker, None),
    "output": (OutputFile, None),
    "resume": (Resume, False),
    "shard": (ShardOption, None),
    "quiet": (Quiet, False),
    "dry_run": (DryRun, False),
}


def _shared_parameters(task: str, default_model: str | None) -> list[inspect.Parameter]:
    """The shared options as signature parameters; `--model` default and env var depend on the task."""
    declared = {**SHARED, "model": (model_option(task, default_model), default_model)}
    assert list(declared) == [f.name for f in fields(CommonOptions)]
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in declared.items()
    ]


def task_command(task: str, default_model: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command function taking `common: CommonOptions` plus its own options.

    The returned function's signature lists the input options, then the command's own, then the shared model
    and output options, which is also the order `--help` shows them in.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(func, eval_str=True).parameters.items() if name != "common"]
        shared = _shared_parameters(task, default_model)
        names = [p.name for p in shared]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            common = CommonOptions(**{name: kwargs.pop(name) for name in names})
            common.paths, common.text, common.jsonl = common.paths or [], common.text or [], common.jsonl or []
            common.glob = common.glob or []
            return func(common=common, **kwargs)

        cut = names.index("model")  # inputs first, then the command's own options, then model and output
        params = shared[:cut] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared[cut:]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
