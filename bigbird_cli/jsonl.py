"""Where records go: JSONL to stdout or a file (`-o`), claimed before the model loads (`Output`).

The JSONL writer's one promise: the output file only ever holds whole lines. Each record is serialised first,
then written with one `os.write` loop while SIGINT/SIGTERM are held back, so Ctrl-C or a kill between records
leaves a valid file. A SIGKILL can still cut a line in half; `open_jsonl(resume=True)` drops such a tail before
appending.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .console import warn
from .errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs sharing a file are not caught there
    fcntl = None  # type: ignore[assignment]

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_held() -> Iterator[None]:
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
    """Writes one JSON object per line to a file descriptor, whole lines only, each flushed as written.

    A write that fails half-way (a full disk) is cut back to the last whole line where the output is a regular
    file, and raised as OutputError: the run stops with one sentence and the file still ends in a whole line.

    With `replace`, the file's old contents go when the first record is written, or when the writer closes
    without an error having written none: a run stopped before its first record (the first summary can take a
    minute) leaves an earlier run's file as it was (`untouched`).
    """

    def __init__(
        self, stream: IO[bytes] | IO[str], *, close: bool = False, name: str = "stdout", replace: bool = False
    ) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._close = close
        self._name = name
        self.untouched = replace  # the old contents are still there, to be replaced

    def write(self, record: dict[str, Any]) -> None:
        # backslashreplace: a lone surrogate in any field becomes a JSON \\udXXX escape instead of stopping the run.
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", errors="backslashreplace")
        with signals_held():
            self._replace_old()
            size = _regular_size(self._fd)
            view = memoryview(line)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except BrokenPipeError:
                raise
            except OSError as exc:
                if size is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, size)
                raise OutputError(f"{self._name} could not be written: {exc.strerror or exc}.") from None

    def _replace_old(self) -> None:
        if self.untouched:
            os.ftruncate(self._fd, 0)
            self.untouched = False

    def close(self) -> None:
        if self._close:
            self._stream.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        try:
            if error is None:  # a run that made no record still replaces the old ones (an empty shard)
                self._replace_old()
        finally:
            self.close()


def _regular_size(fd: int) -> int | None:
    """The size of a regular file (where a torn line can be cut off), None for pipes and devices."""
    info = os.fstat(fd)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def read_records(path: Path, bad_line: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL output, skipping lines that are not one (a line cut off by a kill); `bad_line`
    hears the number of each line skipped that way (a file the user gives is not ours to judge silently)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict):
                yield record
            elif bad_line is not None and raw.strip():
                bad_line(number)


def _resumable_lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """Every line of an existing output, with its record where `--resume` keeps it: a whole (newline-ended) JSON
    object without `error`. Otherwise None: an error record (its document is retried) or a line cut off by a kill.
    What counts as done is therefore exactly what is kept."""
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            # A --dry-run's records are plans, not results: their documents are still to do.
            kept = (
                raw.endswith(b"\n") and isinstance(record, dict) and "error" not in record and not record.get("dry_run")
            )
            yield raw, record if kept else None


def compact_for_resume(path: Path, scanned: tuple[set[str], bool] | None = None) -> set[str]:
    """Prepare an existing output for appending: keep only its whole, successful records; return their ids (the
    documents `--resume` skips), read in the same pass.

    Error records are dropped because their documents will be retried (so each id appears once), and a line cut
    off by a kill is dropped because it is not valid JSON. The file is rewritten through a temporary file and an
    atomic rename, so a crash here leaves either the old or the new file, both valid up to their last newline.
    """
    done, changed = scanned if scanned is not None else resumable_ids(path)
    if changed:
        # Through a symlink, the file it names is replaced (the link stays), with the file's own permissions.
        # The kept lines are streamed, a second pass: memory holds the ids, not the file.
        real = path.resolve()
        if real.stat().st_nlink > 1:
            warn(f"-o {path} has other hard links: --resume rewrites it as a new file, and they keep the old one.")
        tmp = real.with_name(real.name + ".resume-tmp")
        try:
            with open(tmp, "wb") as out:
                out.writelines(raw for raw, record in _resumable_lines(path) if record is not None)
            shutil.copymode(real, tmp)
            os.replace(tmp, real)
        except BaseException as exc:  # a full disk, or Ctrl-C: no temporary copy of the output is left behind
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise OutputError(f"-o {path} can't be prepared for --resume: {exc.strerror or exc}.") from None
            raise
    return done


def resumable_ids(path: Path, check: Callable[[dict[str, Any]], None] | None = None) -> tuple[set[str], bool]:
    """The ids `--resume` takes as done in `path`, and whether it holds lines to drop (error records, a cut line).
    `check` sees every record kept as done, in the same pass (it raises to refuse the file)."""
    done: set[str] = set()
    changed = False
    if path.exists():
        for _, record in _resumable_lines(path):
            if record is None:
                changed = True
                continue
            if check is not None:
                check(record)
            if "id" in record:
                done.add(str(record["id"]))
    return done, changed


class Output:
    """`-o FILE` (or stdout), claimed before the model loads and written after it.

    `claim` checks the file can be written and takes an exclusive lock on it, without changing it: a path that
    is a folder, an unwritable place or a file another run is writing is one sentence before any weights load.
    `writer` then replaces its records from the first new one on (or compacts it for `--resume`) and appends
    records. The lock is what keeps two runs, or two shards, from interleaving records in one file.
    """

    def __init__(
        self, path: Path | None, *, resume: bool = False, check: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.path = output_file(path)
        self.resume = resume
        self.done_ids: set[str] = set()  # with `resume`: the ids already in the file, known once claimed
        self.opened = False  # whether `writer` ran
        self.written: JsonlWriter | None = None  # the writer `writer` gave
        self.check = check  # with `resume`: sees each record kept as done while `claim` reads the file
        self._scanned: tuple[set[str], bool] | None = None  # what `claim` found: done ids, lines to drop
        self._handle: IO[bytes] | None = None
        self._created = False  # whether `claim` made the file: a run that never writes takes it away again

    def claim(self) -> Output:
        if self.path is None:
            return self
        path = self.path
        if path.is_dir():
            raise OutputError(f"-o {path} is a folder; give a file name.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._created = not path.exists()
            self._handle = self._open_locked(path)
        except OSError as exc:
            raise OutputError(f"-o {path} can't be written: {exc.strerror or exc}.") from None
        if self.resume and path.is_file():  # the file is read once, here: `writer` compacts it from what was found
            self._scanned = resumable_ids(path, self.check)
            self.done_ids = self._scanned[0]
        # A pipe or a device holds no earlier records to continue (reading a pipe we write to would never end).
        if self._scanned is not None and self._scanned[1] and not os.access(path.resolve().parent, os.W_OK):
            # Dropping its error records or a cut line rewrites it beside itself: say so before the model loads.
            raise OutputError(f"-o {path} can't be prepared for --resume: its folder is not writable.")
        return self

    @staticmethod
    def _open_locked(path: Path) -> IO[bytes]:
        handle = open(path, "ab")  # append mode: nothing is truncated before the lock is ours
        if fcntl is None:
            return handle
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputError(
                f"-o {path} is being written by another run; give each run (and each --shard) its own file."
            ) from None
        except OSError:
            pass  # a device or file system without locks (/dev/null, some network mounts): nothing to guard
        return handle

    def writer(self) -> JsonlWriter:
        """The writer for the records: stdout, or the claimed file, its old records replaced from the first new one
        on (or compacted and appended to with `resume`)."""
        self.opened = True
        if self.path is None:
            sys.stdout.flush()
            return JsonlWriter(sys.stdout)
        if self._handle is None:
            self.claim()
        assert self._handle is not None
        if self.resume and self.path.is_file():
            compact_for_resume(self.path, self._scanned)
            if _regular_size(self._handle.fileno()) is not None and not _same_file(self._handle, self.path):
                # Compacting renamed a new file into place: lock that one before letting go of the old.
                old, self._handle = self._handle, self._open_locked(self.path)
                old.close()
        replace = not self.resume and _regular_size(self._handle.fileno()) is not None
        handle, self._handle = self._handle, None
        self.written = JsonlWriter(handle, close=True, name=str(self.path), replace=replace)
        return self.written

    @property
    def as_it_was(self) -> bool:
        """Whether the file -o names still holds what it held before the run: `writer` not yet given, or given and
        no record written over the old ones."""
        return self.path is not None and (not self.opened or (self.written is not None and self.written.untouched))

    def close(self) -> None:
        """Let go of a claim `writer` never used: the file is as it was, and one the claim made is removed."""
        if self._handle is not None:
            if self._created and self.path is not None and _same_file(self._handle, self.path):
                self.path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None


def _same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def output_file(output: Path | None) -> Path | None:
    """The file `-o` names, or None where the records go to stdout (no -o, or `-o -`)."""
    return None if output is None or str(output) == "-" else output


def open_jsonl(output: Path | None, *, resume: bool = False) -> JsonlWriter:
    """The writer for `-o FILE` (locked, truncated or compacted and appended to with `resume`), or stdout."""
    return Output(output, resume=resume).claim().writer()
