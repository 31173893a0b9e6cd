"""The `bigbird` Typer app: one subcommand per task, plus convert and bench.

Subcommand modules import torch and the models only when they run, so `--help`, `--version` and shell
completion (which runs this program on every TAB) stay fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from bigbird.models.heap import reuse_freed_memory
from bigbird.models.waiting import wait_passively_when_busy

from . import __version__
from .commands import bench, classify, convert, finetune, mask, qa, summarize
from .commands import eval as evaluate
from .errors import exit_code_for
from .options import Command, Group

PROG_NAME = "bigbird"
# The environment variable Typer/Click completion scripts call back with (derived from the program name).
COMPLETE_VAR = "_BIGBIRD_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
COMPLETIONS_DIR = Path(__file__).resolve().parent.parent / "completions"


class App(Group):
    """The root command, and the one exit path: whatever a command raises (a usage error, a model that can't be
    had, Ctrl-C, SIGTERM, a reader that went away) becomes a message and an exit code through errors.py's table.
    Commands raise; none of them prints its own error or picks its own exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # a finished command's status, or Click's own usage errors
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(exit_code_for(exc)) from None


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
