"""The one table from an exception to what the user sees: a one-sentence message on stderr and an exit code.

Commands raise; the root command (`bigbird_cli.app.App.invoke`) is the one place an exception becomes an exit, through
`exit_code_for`, so the same failure exits the same way whatever command hit it: 0 ok, 1 some documents failed (or
convert --verify found DST's outputs off), 2 a usage error or a model, input or output that can't be had, 130 Ctrl-C,
143 SIGTERM, 141 stdout's reader gone.
Exceptions not in the table are bugs and keep their traceback.
"""

from __future__ import annotations

import functools

from bigbird.tasks.documents import InputError, describe

from .console import error, reader_gone

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Stopped by a signal other than Ctrl-C, as shells report it (128 + the signal's number).
EXIT_BROKEN_PIPE, EXIT_TERMINATED = 141, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `kill`, Slurm, `docker stop`), turned into the same orderly stop as Ctrl-C."""


class UsageError(Exception):
    """Options or paths that can't work together; the message is one sentence."""


class OutputError(UsageError):
    """The output file can't be opened, locked or written."""


# The stops, which need no import to be told apart (a stop may come in the middle of one).
STOPS: tuple[tuple[type[BaseException], int], ...] = (
    (Terminated, EXIT_TERMINATED),
    (KeyboardInterrupt, EXIT_INTERRUPTED),
    (BrokenPipeError, EXIT_BROKEN_PIPE),
)


@functools.cache
def failures() -> tuple[tuple[type[BaseException], int], ...]:
    """The failures' exception types → exit code, most specific first. They are imported only when a command runs
    (`options.Command.invoke` calls this first, with Ctrl-C held back) or something failed: importing them imports
    torch, which `--help` should not pay for.
    """
    from bigbird.eval.metrics import EvalError
    from bigbird.models.checkpoints import CheckpointError
    from bigbird.models.config import ConfigError
    from bigbird.tasks.base import TaskError
    from bigbird.tools.bench import BenchError
    from bigbird.tools.convert import VerifyError
    from bigbird.training.data import TrainingError

    return (
        (UsageError, EXIT_USAGE),
        (InputError, EXIT_USAGE),
        (TaskError, EXIT_USAGE),
        (VerifyError, EXIT_SOME_FAILED),  # convert --verify: DST was written, its outputs are off (a CheckpointError)
        (CheckpointError, EXIT_USAGE),
        (ConfigError, EXIT_USAGE),
        (BenchError, EXIT_USAGE),
        (EvalError, EXIT_USAGE),
        (TrainingError, EXIT_USAGE),
    )


def exit_code_for(exc: BaseException) -> int:
    """Say `exc` as one sentence on stderr and return its exit code (re-raising exceptions the table lacks).

    A stop (Ctrl-C, SIGTERM) raised with a message is a run that says what it kept (`interrupted; ...`); a bare
    one says nothing, as a shell's Ctrl-C. A reader that went away (`bigbird ... | head`) hears nothing either:
    the status is the one a tool killed by SIGPIPE has (1 would say documents failed).
    """
    stop = isinstance(exc, tuple(kind for kind, _ in STOPS))
    for kind, code in STOPS if stop else STOPS + failures():
        if isinstance(exc, kind):
            if isinstance(exc, BrokenPipeError):
                reader_gone()
            elif exc.args or not isinstance(exc, KeyboardInterrupt):
                error(message(exc))
            return code
    raise exc


def message(exc: BaseException) -> str:
    """The exception's first line as a sentence."""
    return describe(exc) + "."
