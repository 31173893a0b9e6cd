"""What the user reads on stderr: warnings, errors, information lines and progress: the live counter on a
terminal, and for logs (stderr no terminal: nohup, Slurm, CI) a plain line at a steady interval instead, whose
redraws would otherwise fill a log file with control characters:

    progress: 120/500 documents, 3.2 documents/s, 2 failed, ETA 1m59s

stdout carries records only (JSONL), so every message of every command goes through the one stderr console here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Protocol

from rich.console import Console
from rich.markup import escape

# Logs, warnings and progress: stderr only, so stdout stays pure JSONL when records go there.
console = Console(stderr=True, highlight=False, soft_wrap=True)


# Control characters as escapes, tab kept: a message names documents, and a file name may hold a newline. C1
# controls too (0x9b starts an escape sequence on some terminals, 0x85 is a line break), and the Unicode line and
# paragraph separators.
_CONTROLS = (*range(32), *range(127, 160), 0x2028, 0x2029)
_ESCAPED = {c: f"\\x{c:02x}" if c < 256 else f"\\u{c:04x}" for c in _CONTROLS if c != 9} | {10: "\\n", 13: "\\r"}


def one_line(text: str) -> str:
    """`text` as one line of a log: its control characters (a newline in a file's name) written as escapes, so that
    one message is one line, as a log reader or `grep` expects."""
    return text.translate(_ESCAPED)


def warn(message: str) -> None:
    """A warning line on stderr."""
    console.print(f"[yellow]warning:[/yellow] {escape(one_line(message))}")


def error(message: str) -> None:
    """An error line on stderr."""
    console.print(f"[red]error:[/red] {escape(one_line(message))}")


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


# Seconds between two lines; BIGBIRD_PROGRESS_SECONDS changes it (0: a line per document).
DEFAULT_INTERVAL = 30.0


class Counts(Protocol):
    ok: int
    failed: int
    skipped: int


class ProgressLog:
    """Writes a progress line every `interval` seconds as records are written (nothing between records: a line
    says something happened). `total`: the documents the run was given, when known cheaply (files, --text)."""

    def __init__(
        self,
        total: int | None,
        write: Callable[[str], None],
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.write, self.clock = total, write, clock
        self.interval = progress_interval() if interval is None else interval
        self.counts: Counts | None = None
        self.start = self.last = clock()

    def bind(self, counts: Counts) -> tuple[Callable[[], None], Callable[[], None]]:
        """(advance, stop) for the runner's loop, reading the run's counts of done, failed and skipped."""
        self.counts = counts
        self.start = self.last = self.clock()
        return self.advance, lambda: None

    def advance(self) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        assert self.counts is not None
        done = self.counts.ok + self.counts.failed
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        parts = [f"{done}/{self.total - self.counts.skipped}" if self.total is not None else f"{done}"]
        parts[0] += " documents"
        parts.append(f"{rate:.3g} documents/s")
        parts.append(f"{self.counts.failed} failed")
        if self.total is not None and rate > 0:
            left = max(0, self.total - self.counts.skipped - done)
            parts.append(f"ETA {duration(left / rate)}")
        return "progress: " + ", ".join(parts)


def progress_interval() -> float:
    """BIGBIRD_PROGRESS_SECONDS, else DEFAULT_INTERVAL (a value that isn't a number is the default too)."""
    try:
        return max(0.0, float(os.environ.get("BIGBIRD_PROGRESS_SECONDS", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def duration(seconds: float) -> str:
    """`1h02m`, `1m59s`, `7s`: what a log reader takes in at a glance."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
