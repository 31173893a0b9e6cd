"""Shared fixtures: tiny checkpoints (made once per session) and a way to run the installed `bigbird` command.

The checkpoints have random weights and a small window (max_position_embeddings=256), so a few hundred words
are already a "long" document: chunking, sliding windows and block-sparse attention all run in the CLI tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

# Window of the tiny CLI checkpoints: 16 blocks of 16 tokens, long enough for block-sparse attention to engage.
WINDOW = 256

# (family, head, config overrides) for each checkpoint the CLI tests use, by name.
TINY_MODELS = {
    "mask": ("bigbird", "masked_lm", {}),
    "qa": ("bigbird", "question_answering", {}),
    "classify": ("bigbird", "sequence_classification", {"id2label": {0: "negative", 1: "neutral", 2: "positive"}}),
    "summarize": ("pegasus", "conditional_generation", {"max_length": 12, "num_beams": 2}),
    "pegasus-qa": ("pegasus", "question_answering", {}),
    "pegasus-classify": ("pegasus", "sequence_classification", {"id2label": {0: "no", 1: "yes"}}),
}


class TinyModels:
    """Checkpoint directories by name (see TINY_MODELS), each made on first use and kept for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.made:
            from bigbird.tools.tiny import make_tiny_checkpoint

            family, head, overrides = TINY_MODELS[name]
            seed = list(TINY_MODELS).index(name)
            self.made[name] = make_tiny_checkpoint(
                self.root / name, family, head, seed=seed, max_position_embeddings=WINDOW, **overrides
            )
        return self.made[name]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: they gain nothing from threads, and on a busy machine
    thread barriers cost more than the math."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory) -> Path:
    """The kernel choices the tests measure go to a folder of their own, never the user's cache (the CLI tests'
    `bigbird` processes inherit the variable)."""
    path = tmp_path_factory.mktemp("kernel-cache")
    os.environ["BIGBIRD_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """Kernel timings count as taken on a quiet machine, as where /proc/stat can't be read: a test that reads the
    kernel cache file must find the choice written whatever else loads the machine (CI runs tests side by side).
    The tests of timing under load give their own CPU readings."""
    from bigbird.models import kernels

    monkeypatch.setattr(kernels, "PROC_STAT", Path(os.devnull) / "no-proc-stat")


@pytest.fixture
def fresh_choices(tmp_path, monkeypatch):
    """An empty kernel cache folder, no override, and no kernel choice made yet in this process."""
    from bigbird.models import kernels

    monkeypatch.setenv("BIGBIRD_CACHE_DIR", str(tmp_path))
    for kind in kernels.KINDS:
        monkeypatch.delenv(kind.override, raising=False)
    monkeypatch.setattr(kernels, "_chosen", {})
    monkeypatch.setattr(kernels, "_measured", {})
    monkeypatch.setattr(kernels, "_contended", {})
    return tmp_path


@pytest.fixture(params=["on", "packed", "off"])
def fast_paths(request, monkeypatch) -> str:
    """Run a test with torch's private fast ops in use (where they pass their check), with every layer that can
    on packed weights (and cross-attention on packed keys/values), and with the private ops switched off."""
    if request.param == "off":
        monkeypatch.setenv("BIGBIRD_PRIVATE_OPS", "0")
    if request.param == "packed":
        monkeypatch.setenv("BIGBIRD_KERNELS", "onednn-packed")
        monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "onednn")
    return request.param


@pytest.fixture(params=["auto", "safe-fbgemm", "safe-onednn"])
def int8_path(request, monkeypatch) -> str:
    """Run a test on the int8 path this CPU picks (weight range and kernel) and, with each int8 kernel, on the
    weight range that is exact on CPUs without VNNI."""
    safe = request.param.startswith("safe")
    monkeypatch.setenv("BIGBIRD_INT8_SAFE", "1" if safe else "")
    monkeypatch.setenv("BIGBIRD_INT8_KERNELS", request.param.removeprefix("safe-") if safe else "auto")
    return request.param


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


LONG_TEXT = " ".join(
    [
        "Rivers carry sediment to the sea, where it settles and slowly builds wide, flat deltas.",
        "The museum opened a new wing with paintings, sculptures and a small library of rare books.",
        "Every morning the baker lights the oven at four and the first bread is ready by six.",
        "The weather turned cold in November, and the first snow fell on the hills above the town.",
    ]
    * 6
)


# Two short documents, each one window of the tiny checkpoints.
BAKER = "Every morning the baker lights the oven at four and the bread is ready by six."
MUSEUM = "The museum opened a new wing with paintings and sculptures."


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A folder of documents: short and long (beyond the tiny window), nested, plus a file the glob skips."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "notes").mkdir()
    (root / "baker.txt").write_text("Every morning the baker lights the oven at four and the bread is ready by six.\n")
    (root / "long.md").write_text(LONG_TEXT + "\n")
    (root / "notes" / "museum.txt").write_text(
        "The museum opened a new wing with paintings and sculptures. Researchers summarized the results.\n"
    )
    (root / "notes" / "skip.json").write_text("{}\n")
    return root


def bigbird_executable() -> str:
    """The installed `bigbird` console script: on PATH (make test), else beside this interpreter."""
    found = shutil.which("bigbird")
    if found:
        return found
    beside = Path(sys.executable).with_name("bigbird")
    if beside.exists():
        return str(beside)
    pytest.skip("the bigbird command is not installed (pip install -e .)")


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory) -> Path:
    """An empty HF_HOME, so the CLI never reads or writes the user's Hub cache."""
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture(scope="session")
def bigbird(hf_home):
    """Run the installed `bigbird` command: bigbird(*args, input=bytes, env={...}) -> CompletedProcess."""
    exe = bigbird_executable()

    def run(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None, check_rc=None):
        full_env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        # No progress lines unless a test asks: a run past 30 s on a loaded machine would print one, and tests
        # compare two runs' stderr (local against Ray).
        full_env["BIGBIRD_PROGRESS_SECONDS"] = "1000000"
        full_env.pop("BIGBIRD_MODEL_SUMMARIZE", None)
        full_env.update(env or {})
        result = subprocess.run(
            [exe, *map(str, args)], input=input or b"", capture_output=True, env=full_env, timeout=300
        )
        if check_rc is not None:
            assert result.returncode == check_rc, result.stderr.decode()
        return result

    return run


def jsonl(data: bytes | str | Path) -> list[dict]:
    """Parse JSONL output (bytes from stdout, or a file path); every line must be a whole JSON object."""
    if isinstance(data, Path):
        data = data.read_bytes()
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    assert data == "" or data.endswith("\n"), "output must end with a newline"
    # Lines end at "\n" only: str.splitlines would also cut at U+0085, U+2028 and the like, which JSON strings may
    # hold as they are (a file named with one puts it in the record's id).
    return [json.loads(line) for line in data.split("\n")[:-1]]


def stopped_run(
    args: list, said: bytes, stop: int, *, stdin: bytes | None = None, times: int = 1
) -> tuple[int, str, str]:
    """Run `bigbird *args`, send it the signal `stop` once its stderr has said `said` `times` times (stdin, when
    given, is written and left open, as a pipe still feeding it); its exit code, stdout and stderr."""
    # Ctrl-C's SIGINT as a terminal sends it: a shell starting the tests in the background (`cmd &` in a script)
    # hands its children SIGINT ignored, which the CLI then rightly keeps ignoring; the shim puts it back first.
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    command = [sys.executable, "-c", reset, bigbird_executable(), *map(str, args)]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.flush()
        heard = b""
        while heard.count(said) < times:
            line = proc.stderr.readline()
            assert line, f"the run ended first, saying: {heard.decode()}"
            heard += line
        proc.send_signal(stop)
        code = proc.wait(timeout=120)
        return code, proc.stdout.read().decode(), heard.decode() + proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()


# The commands run in-process (typer's CliRunner) and write records with -o: much faster than starting the
# installed command for each case; the cases that need a real process start it (bigbird_executable).
CLI = CliRunner()


def cli(*args: object) -> Any:
    """`bigbird ARGS` run in-process; the result has `exit_code` and `output` (stdout and stderr)."""
    from bigbird_cli.app import app

    return CLI.invoke(app, [str(a) for a in args])


def cli_classify(tiny_models: TinyModels, *args: object) -> Any:
    """`bigbird classify` on the tiny classifier, quietly."""
    return cli("classify", "-m", tiny_models["classify"], "-q", *args)


def one_sentence(output: str) -> bool:
    """Whether a command's output holds exactly one error line, a sentence, and no traceback."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    return len(errors) == 1 and "Traceback" not in output and errors[0].endswith(".")


@pytest.fixture
def offline_hub(monkeypatch, hf_home):
    """In-process runs see the tests' Hub cache, offline, and no model named by the environment."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("BIGBIRD_MODEL_CLASSIFY", raising=False)
