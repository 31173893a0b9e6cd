"""The app around the tasks: --version, --help with worked examples, usage errors, completion scripts."""

from __future__ import annotations

import pytest
from conftest import CLI, one_sentence
from typer.testing import CliRunner

from bigbird_cli import __version__
from bigbird_cli.app import COMPLETIONS_DIR, app, completion_script, write_completions

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"bigbird {__version__}"


@pytest.mark.parametrize("command", ["summarize", "qa", "classify", "mask"])
def test_help_shows_a_worked_example(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert f"Example: bigbird {command} " in result.output
    for option in (
        "--model",
        "--device",
        "--dtype",
        "--threads",
        "--batch-size",
        "--output",
        "--resume",
        "--shard",
        "--quiet",
        "--strategy",
        "--text",
        "--jsonl",
        "--dataset",
        "--glob",
    ):
        assert option in result.output


COMMANDS = ["summarize", "qa", "classify", "mask", "convert", "bench", "eval", "eval summarize", "eval qa"]


@pytest.mark.parametrize("command", ["", *COMMANDS, "eval classify"])
def test_on_off_options_are_listed_as_flags(command):
    """--quiet, --resume, --help, --version and the rest take no value, and help doesn't suggest one."""
    result = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--help" in result.output
    assert "<bool>" not in result.output


def test_every_command_is_registered():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    for command in ("summarize", "qa", "classify", "mask", "convert", "bench", "eval"):
        assert command in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["mask"], "no input"),
        (["mask", "--text", "x", "--resume"], "--resume needs -o"),
        (["mask", "--text", "x", "--shard", "3/3"], "--shard 3/3"),
        (["mask", "--text", "x", "--shard", "half"], "--shard takes I/N"),
        (["classify", "--text", "x"], "classify needs a model"),
        (["mask", "-", "--jsonl", "-"], "stdin can be read only once"),
        (["mask", "--dataset", "no/such-dataset-here.csv"], "does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_sentence(args, message, tmp_path, monkeypatch):
    monkeypatch.delenv("BIGBIRD_MODEL_CLASSIFY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["classify", "--batch-size", "0", "--text", "x"], "'--batch-size'"),
        (["summarize", "--strategy", "foo", "--text", "x"], "'foo' is not one of"),
        (["classify", "--batch-siz", "2"], "No such option: --batch-siz"),
        (["eval", "qa", "--bogus"], "No such option: --bogus (`bigbird eval qa -h` lists the options)."),
        (["--bogus"], "No such option: --bogus (`bigbird -h` lists the options)."),
        (["nosuch"], "No such command 'nosuch'"),
        (["bench", "--batch-sizes", "0"], "takes positive numbers, e.g. 1,8"),  # it gave --seq-lens' example
    ],
)
def test_clicks_own_usage_errors_are_one_sentence_too(args, said):
    """An option out of range, unknown or misspelt was Click's framed box under a usage line, beside the sentence
    every other usage error is: now that sentence too, saying where the options are listed, with exit 2."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and one_sentence(result.output), result.output
    assert said in result.output and "Usage:" not in result.output


@pytest.mark.parametrize("args", [[], ["eval"], ["finetune"]])
def test_a_bare_group_prints_its_help_and_no_error(args):
    """Click says "no arguments: help shown" with a usage error of its own, which the usage-error sentence caught
    too: the help ended with an empty `error:` line."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Usage:" in result.output and "error:" not in result.output, result.output


def test_an_empty_folder_is_no_input(tmp_path):
    result = runner.invoke(app, ["mask", str(tmp_path)])
    assert result.exit_code == 2 and "hold no documents" in result.output


def test_completion_scripts_are_current(tmp_path):
    """completions/ must match what the app generates; regenerate with write_completions() if this fails."""
    written = write_completions(tmp_path)
    for path in written:
        assert (COMPLETIONS_DIR / path.name).read_text() == path.read_text(), f"completions/{path.name} is stale"
    assert "_BIGBIRD_COMPLETE=complete_bash" in completion_script("bash")


def test_completion_completes_commands_and_options(monkeypatch):
    monkeypatch.setenv("_BIGBIRD_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "bigbird qa --to")
    monkeypatch.setenv("COMP_CWORD", "2")
    result = runner.invoke(app, [], prog_name="bigbird")
    assert "--top-k" in result.output


def test_completion_completes_bench_presets(monkeypatch):
    from bigbird.models.presets import PRESETS

    monkeypatch.setenv("_BIGBIRD_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "bigbird bench --preset bigbird-")
    monkeypatch.setenv("COMP_CWORD", "3")
    result = runner.invoke(app, [], prog_name="bigbird")
    assert result.output.split() == [name for name in PRESETS if name.startswith("bigbird-")]


def test_install_completion_writes_the_script(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    # Name the shell instead of detecting it: under `make`, the parent process is /bin/sh, which typer refuses.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--install-completion", "bash"], prog_name="bigbird")
    assert result.exit_code == 0, result.output
    script = tmp_path / ".bash_completions" / "bigbird.sh"
    assert "_BIGBIRD_COMPLETE" in script.read_text() and str(script) in (tmp_path / ".bashrc").read_text()


def test_help_shows_flags_as_flags_and_one_input_panel(offline_hub):
    result = CLI.invoke(app, ["classify", "--help"], terminal_width=200)
    lines = result.output.splitlines()
    assert sum("─ Input ─" in line for line in lines) == 1
    for flag in ("--resume", "--quiet"):
        [line] = [line for line in lines if flag in line and "skip" in line or flag in line and "progress" in line]
        assert "<bool>" not in line
