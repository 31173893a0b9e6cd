"""Where results and messages go: JSONL records to stdout or a file, everything else to stderr.

The JSONL writer's one promise: the output file only ever holds whole lines. Each record is serialised first,
then written with one `os.write` loop while SIGINT/SIGTERM are held back, so Ctrl-C or a kill between records
leaves a valid file. A SIGKILL can still cut a line in half; `open_jsonl(resume=True)` drops such a tail before
appending.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

# Logs, warnings and progress: stderr only, so stdout stays pure JSONL when records go there.
console = Console(stderr=True, highlight=False, soft_wrap=True)

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM for the duration (they are delivered right after), where the OS allows it."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class JsonlWriter:
    """Writes one JSON object per line to a file descriptor, whole lines only, each flushed as written."""

    def __init__(self, stream: IO[bytes] | IO[str], *, close: bool = False) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._close = close

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with _signals_held():
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._close:
            self._stream.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL output, skipping lines that are not one (a line cut off by a kill)."""
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def read_done_ids(path: Path) -> set[str]:
    """Ids of the records in an existing JSONL output that succeeded (no `error`), for `--resume`."""
    if not path.exists():
        return set()
    return {str(record["id"]) for record in read_records(path) if "id" in record and "error" not in record}


def compact_for_resume(path: Path) -> None:
    """Prepare an existing output for appending: keep only its whole, successful records.

    Error records are dropped because their documents will be retried (so each id appears once), and a line cut
    off by a kill is dropped because it is not valid JSON. The file is rewritten through a temporary file and an
    atomic rename, so a crash here leaves either the old or the new file, both valid up to their last newline.
    """
    if not path.exists():
        return
    kept: list[bytes] = []
    changed = False
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
                whole = raw.endswith(b"\n")
            except ValueError:
                record, whole = None, False
            if whole and isinstance(record, dict) and "error" not in record:
                kept.append(raw)
            else:
                changed = True
    if not changed:
        return
    tmp = path.with_name(path.name + ".resume-tmp")
    tmp.write_bytes(b"".join(kept))
    os.replace(tmp, path)


def open_jsonl(output: Path | None, *, resume: bool = False) -> JsonlWriter:
    """The writer for `-o FILE` (truncated, or compacted and appended to with `resume`), or stdout."""
    if output is None or str(output) == "-":
        sys.stdout.flush()
        return JsonlWriter(sys.stdout)
    if output.parent != Path(""):
        output.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        compact_for_resume(output)
    return JsonlWriter(open(output, "ab" if resume else "wb"), close=True)


def warn(message: str) -> None:
    """A warning line on stderr."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    """An error line on stderr."""
    console.print(f"[red]error:[/red] {escape(message)}")


def info(message: str) -> None:
    """An informational line on stderr."""
    console.print(message, markup=False)
