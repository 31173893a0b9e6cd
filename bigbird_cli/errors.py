"""The one table from an exception to what the user sees: a one-sentence message on stderr and an exit code.

Every command ends through `exit_code_for`, so the same failure exits the same way whatever command hit it:
0 ok, 1 some documents failed, 2 a usage error or a model, input or output that can't be had, 130 Ctrl-C.
Exceptions not in the table are bugs and keep their traceback; Ctrl-C (130) is the runner's, which says how to
resume.
"""

from __future__ import annotations

import functools

from bigbird.tasks.documents import InputError, describe

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Stopped by a signal other than Ctrl-C, as shells report it (128 + the signal's number).
EXIT_BROKEN_PIPE, EXIT_TERMINATED = 141, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `kill`, Slurm, `docker stop`), turned into the same orderly stop as Ctrl-C."""


class UsageError(Exception):
    """Options or paths that can't work together; the message is one sentence."""


class OutputError(UsageError):
    """The output file can't be opened, locked or written."""


@functools.cache
def _table() -> tuple[tuple[type[BaseException], int], ...]:
    """Exception types → exit code, most specific first. The core exceptions are imported only once something
    failed: importing them imports torch, which `--help` should not pay for."""
    from bigbird.eval.metrics import EvalError
    from bigbird.models.checkpoints import CheckpointError
    from bigbird.models.config import ConfigError
    from bigbird.tasks.base import TaskError
    from bigbird.tools.bench import BenchError

    return (
        (UsageError, EXIT_USAGE),
        (InputError, EXIT_USAGE),
        (TaskError, EXIT_USAGE),
        (CheckpointError, EXIT_USAGE),
        (ConfigError, EXIT_USAGE),
        (BenchError, EXIT_USAGE),
        (EvalError, EXIT_USAGE),
    )


def exit_code_for(exc: BaseException) -> int:
    """Print `exc` as one sentence on stderr and return its exit code (re-raising exceptions the table lacks)."""
    from .console import error

    for kind, code in _table():
        if isinstance(exc, kind):
            error(message(exc))
            return code
    raise exc


def message(exc: BaseException) -> str:
    """The exception's first line as a sentence."""
    return describe(exc) + "."
