"""The one exit path: what a command raises becomes one sentence on stderr and an exit code (bigbird_cli/errors.py's
table, applied by the root command, `app.App.invoke`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import cli, one_sentence

from bigbird.tasks import TaskError
from bigbird_cli import errors
from bigbird_cli.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, Terminated, UsageError


@pytest.mark.parametrize(
    ("exc", "code", "said"),
    [
        (UsageError("--top-k takes a number."), EXIT_USAGE, "error: --top-k takes a number."),
        (TaskError("model ./nowhere can't be found."), EXIT_USAGE, "error: model ./nowhere can't be found."),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, ""),  # a bare Ctrl-C says nothing, as a shell's
        (KeyboardInterrupt("interrupted; the records are whole"), EXIT_INTERRUPTED, "error: interrupted"),
        (Terminated("terminated before any record was written"), EXIT_TERMINATED, "error: terminated before"),
        (BrokenPipeError(), EXIT_BROKEN_PIPE, ""),  # the reader went away: nothing to say
    ],
)
def test_the_table_maps_each_exception_to_its_code_and_sentence(exc, code, said, monkeypatch):
    heard: list[str] = []
    monkeypatch.setattr(errors, "error", lambda message: heard.append(f"error: {message}"))
    monkeypatch.setattr(errors, "reader_gone", lambda: heard.append("reader gone"))
    assert errors.exit_code_for(exc) == code
    if isinstance(exc, BrokenPipeError):
        assert heard == ["reader gone"]
    else:
        assert ("\n".join(heard)).startswith(said) and len(heard) == (1 if said else 0)


def test_exceptions_outside_the_table_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        errors.exit_code_for(ZeroDivisionError("a bug"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classify", "--top-k", "0"], "--top-k takes a number of labels (1 or more) or all, not '0'."),
        (["qa", "--question", " "], "--question is empty."),
        (["mask", "--targets", ","], "--targets names no word: give one or more, separated by commas."),
        (["summarize", "--length-penalty", "inf"], "--length-penalty takes a finite number, not inf."),
        (["bench", "--preset", "bigbird-roberta-base", "--model", "x"], "name the weights with one of --preset"),
    ],
)
def test_a_commands_own_check_raises_and_exits_through_the_table(args, message, offline_hub):
    """Commands raise; none prints its own error or exits: the root command says it once, with exit 2."""
    result = cli(*args, "--text", "x") if args[0] != "bench" else cli(*args)
    assert result.exit_code == EXIT_USAGE and message in result.output and one_sentence(result.output)


# A Ctrl-C in the middle of the libraries' import, as a user's early Ctrl-C lands: the CLI run in a process of its
# own, its import of the error table's modules sending SIGINT to itself halfway.
EARLY_CTRL_C = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from bigbird_cli import app, errors
real, finished = errors.failures, []
def interrupted_import():
    os.kill(os.getpid(), signal.SIGINT)
    finished.append(real())
errors.failures = interrupted_import
sys.argv = ["bigbird", *sys.argv[1:]]
try:
    app.main()
except SystemExit as end:
    print(end.code, bool(finished))
"""


def test_ctrl_c_while_the_libraries_import_waits_for_them_then_stops(tiny_models):
    """A Ctrl-C while torch imported left it half made, and saying the stop imported it again: tracebacks, crashes
    (139, 134), the stop lost (exit 0) or a document failing on a half-made numpy. The import now finishes first and
    the stop comes right after it: 130, nothing said, no record."""
    args = ["classify", "--text", "A short text.", "-m", str(tiny_models["classify"])]
    done = subprocess.run([sys.executable, "-c", EARLY_CTRL_C, *args], capture_output=True, timeout=300)
    assert done.stdout.decode().splitlines() == ["130 True"], done.stdout.decode() + done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
