"""The `bigbird` Typer app: one subcommand per task, plus convert and bench.

Subcommand modules import torch and the models only when they run, so `--help`, `--version` and shell
completion (which runs this program on every TAB) stay fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bigbird.models.heap import reuse_freed_memory
from bigbird.models.waiting import wait_passively_when_busy

from . import __version__
from .commands import bench, classify, convert, finetune, mask, qa, summarize
from .commands import eval as evaluate
from .errors import UsageError, exit_code_for
from .options import Command, Group

PROG_NAME = "bigbird"
# The environment variable Typer/Click completion scripts call back with (derived from the program name).
COMPLETE_VAR = "_BIGBIRD_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
COMPLETIONS_DIR = Path(__file__).resolve().parent.parent / "completions"


# Click's usage error and error base, whichever Click typer runs on (its own copy since typer 0.2x, the click
# package before): BadParameter's bases.
CLICK_USAGE_ERROR: type[Exception] = typer.BadParameter.__base__
CLICK_ERROR: type[Exception] = CLICK_USAGE_ERROR.__base__


class App(Group):
    """The root command, and the one exit path: whatever a command raises (a usage error, a model that can't be
    had, Ctrl-C, SIGTERM, a reader that went away) becomes a message and an exit code through errors.py's table.
    Commands raise; none of them prints its own error or picks its own exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except CLICK_USAGE_ERROR as exc:  # the root's own options (`bigbird --bogus`)
            raise_as_usage_error(exc)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CLICK_USAGE_ERROR as exc:  # Click's parsing: an unknown option or command, a value out of range
            raise_as_usage_error(exc)
        except (typer.Exit, typer.Abort, CLICK_ERROR):
            raise  # a finished command's status
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(exit_code_for(exc)) from None


def raise_as_usage_error(exc: Any) -> NoReturn:
    """Click's usage error as the sentence every other usage error is (Click framed it in a box of its own, under
    a usage line), with where to read the options. A group called bare (`bigbird`, `bigbird eval`) has printed its
    help, which Click says with a usage error of its own: that one goes on as it is."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    command = exc.ctx.command_path if exc.ctx is not None else PROG_NAME
    raise typer.Exit(
        exit_code_for(UsageError(f"{exc.format_message().rstrip('.')} (`{command} -h` lists the options)"))
    )


app = typer.Typer(
    name=PROG_NAME,
    help="Long-text summarization, question answering, classification and fill-mask with BigBird and "
    "BigBirdPegasus. Results are JSONL, one record per document; logs go to stderr.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=App,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG_NAME} {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Long-text summarization, question answering, classification and fill-mask with BigBird and BigBirdPegasus."""


app.command("summarize", cls=Command)(summarize.command)
app.command("qa", cls=Command)(qa.command)
app.command("classify", cls=Command)(classify.command)
app.command("mask", cls=Command)(mask.command)
app.command("convert", cls=Command)(convert.command)
app.command("bench", cls=Command)(bench.command)
app.add_typer(evaluate.app, name="eval")
app.add_typer(finetune.app, name="finetune")


def completion_script(shell: str) -> str:
    """The completion script for `shell`, as `bigbird --show-completion` prints it (it calls back into bigbird)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell) + "\n"


def write_completions(directory: Path = COMPLETIONS_DIR) -> list[Path]:
    """Regenerate completions/ (bigbird.bash, _bigbird for zsh, bigbird.fish); tests check they are current."""
    names = {"bash": f"{PROG_NAME}.bash", "zsh": f"_{PROG_NAME}", "fish": f"{PROG_NAME}.fish"}
    written = []
    for shell in SHELLS:
        path = directory / names[shell]
        path.write_text(completion_script(shell), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    """Console-script entry point (`bigbird`): every exit goes through `App.invoke` above."""
    reuse_freed_memory()  # the process's heap: see core/models/heap.py (no torch import, so TAB stays fast)
    wait_passively_when_busy(argv=sys.argv[1:])  # OpenMP's waiting on a busy machine: core/models/waiting.py
    app(prog_name=PROG_NAME)


if __name__ == "__main__":
    main()
