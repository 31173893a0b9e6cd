"""What the user reads on stderr: warnings, errors, information lines and the live progress counter.

stdout carries records only (JSONL), so every message of every command goes through the one stderr console here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

# Logs, warnings and progress: stderr only, so stdout stays pure JSONL when records go there.
console = Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning line on stderr."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    """An error line on stderr."""
    console.print(f"[red]error:[/red] {escape(message)}")


def info(message: str) -> None:
    """An informational line on stderr."""
    console.print(message, markup=False)


def reader_gone() -> None:
    """After a BrokenPipeError (`bigbird ... | head`): point stdout at /dev/null, so that Python's flush of stdout
    on exit finds nothing to complain about."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def progress(enabled: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """A counter of documents on stderr (`advance`, `stop`), or two no-ops when progress is off."""
    if not enabled:
        return (lambda: None), (lambda: None)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(), TextColumn("{task.completed} documents"), TimeElapsedColumn(), console=console, transient=True
    )
    task_id = bar.add_task("documents", total=None)
    bar.start()
    return (lambda: bar.advance(task_id)), bar.stop
