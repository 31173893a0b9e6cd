"""Batch behaviour through the installed `bigbird` command: bad inputs, resume after a kill, shards, exit codes,
and a Hub id resolved from a local Hub cache with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import bigbird_executable, jsonl, stopped_run

TEXTS = [
    "Plants create energy through photosynthesis.",
    "The committee met on Tuesday to review the budget.",
    "Rivers carry sediment to the sea, where it settles.",
    "The museum opened a new wing with paintings.",
    "Every morning the baker lights the oven at four.",
    "The weather turned cold in November.",
    "A patent describes an invention and its claims.",
]


def text_args(texts=TEXTS):
    return [arg for text in texts for arg in ("--text", text)]


@pytest.fixture(scope="module")
def reference(bigbird, tiny_models):
    """Records of a clean classify run over TEXTS, by id."""
    result = bigbird("classify", *text_args(), "-m", tiny_models["classify"], check_rc=0)
    return {r["id"]: r for r in jsonl(result.stdout)}


def test_bad_inputs_become_error_records_and_good_ones_are_intact(bigbird, tiny_models, tmp_path, reference):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a-good.txt").write_text(TEXTS[0])
    (folder / "b-empty.txt").write_text("")
    (folder / "c-binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00binary")
    (folder / "d-latin1.txt").write_bytes("Caf\xe9 society met on Tuesday.".encode("latin-1"))
    records_file = tmp_path / "records.jsonl"
    records_file.write_text(
        json.dumps({"id": "j-good", "text": TEXTS[1]}) + "\n{broken json\n" + json.dumps({"id": "j-nofield"}) + "\n"
    )
    result = bigbird(
        "classify",
        folder,
        tmp_path / "vanished.txt",
        "--jsonl",
        records_file,
        *text_args(TEXTS[2:3]),
        "-m",
        tiny_models["classify"],
        "--batch-size",
        "4",
        check_rc=1,
    )
    records = jsonl(result.stdout)
    by_id = {r["id"]: r for r in records}
    assert list(by_id) == [
        "a-good.txt",
        "b-empty.txt",
        "c-binary.txt",
        "d-latin1.txt",
        str(tmp_path / "vanished.txt"),
        "text:0",
        "j-good",
        f"{records_file}:2",
        "j-nofield",
    ]
    errors = {i: r["error"] for i, r in by_id.items() if "error" in r}
    assert set(errors) == {
        "b-empty.txt",
        "c-binary.txt",
        str(tmp_path / "vanished.txt"),
        f"{records_file}:2",
        "j-nofield",
    }
    assert "empty" in errors["b-empty.txt"] and "binary" in errors["c-binary.txt"]
    assert "does not exist" in errors[str(tmp_path / "vanished.txt")]
    assert "not valid JSON" in errors[f"{records_file}:2"] and "no 'text' field" in errors["j-nofield"]
    for reason in errors.values():
        assert reason.endswith(".") and "\n" not in reason
    assert "UTF-8" in by_id["d-latin1.txt"]["warning"] and "label" in by_id["d-latin1.txt"]
    # Good documents get the same results as in a clean run, whatever went wrong around them.
    for got, clean in [(by_id["a-good.txt"], reference["text:0"]), (by_id["j-good"], reference["text:1"])]:
        assert got["scores"] == pytest.approx(clean["scores"], abs=1e-5)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr and stderr.count("error:") == 5 and "warning:" in stderr
    assert "4 done, 5 failed" in stderr


def test_resume_after_a_kill_completes_the_output(bigbird, tiny_models, tmp_path, reference):
    """SIGKILL a run mid-way (it is fed from a pipe, so "mid-way" is exact), then --resume finishes the job."""
    out = tmp_path / "out.jsonl"
    lines = [json.dumps({"id": f"text:{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)]
    marker = json.dumps({"id": "marker"}) + "\n"  # no text: an error record, announced on stderr when written
    cmd = [bigbird_executable(), "classify", "--jsonl", "-", "-m", str(tiny_models["classify"]), "-o", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write("".join(lines[:3]).encode() + marker.encode())
        proc.stdin.flush()
        assert b"marker" in proc.stderr.readline()  # blocks until the 4th record is written
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    partial = jsonl(out)  # whole lines only
    assert [r["id"] for r in partial] == ["text:0", "text:1", "text:2", "marker"]

    with open(out, "ab") as handle:  # what a SIGKILL in the middle of a write would leave
        handle.write(b'{"id": "text:3", "lab')
    stdin = ("".join(lines) + marker).encode()
    result = bigbird(
        "classify", "--jsonl", "-", "-m", tiny_models["classify"], "-o", out, "--resume", input=stdin, check_rc=1
    )
    assert "4 done, 1 failed, 3 skipped" in result.stderr.decode()
    records = jsonl(out)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted([f"text:{i}" for i in range(len(TEXTS))] + ["marker"]) and len(set(ids)) == len(ids)
    for record in records:
        if record["id"] != "marker":
            assert record["scores"] == pytest.approx(reference[record["id"]]["scores"], abs=1e-5)
            assert record["source"] == f"stdin:{int(record['id'][5:]) + 1}"


@pytest.mark.parametrize(
    ("stop", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_or_sigterm_leaves_whole_lines_and_says_how_to_resume(tiny_models, tmp_path, stop, code, said):
    """SIGTERM (timeout, Slurm, docker stop) ended the run at once, without a word."""
    out = tmp_path / "out.jsonl"
    stdin = b'{"id": "a", "text": "A [MASK] here."}\n{"id": "b", "text": "no mask"}\n'
    args = ["mask", "--jsonl", "-", "-m", tiny_models["mask"], "-o", out]
    exit_code, _, stderr = stopped_run(args, b"no [MASK] token", stop, stdin=stdin)  # both records are written
    assert exit_code == code
    assert f"{said}; the records written so far are whole: rerun with --resume -o {out}" in stderr
    assert "Traceback" not in stderr
    assert [r["id"] for r in jsonl(out)] == ["a", "b"]


def test_shards_cover_the_input_exactly_once(bigbird, tiny_models, tmp_path, reference):
    seen = []
    for i in range(3):
        out = tmp_path / f"shard-{i}.jsonl"
        bigbird("classify", *text_args(), "-m", tiny_models["classify"], "--shard", f"{i}/3", "-o", out, check_rc=0)
        seen += jsonl(out)
    assert sorted(r["id"] for r in seen) == sorted(reference)
    for record in seen:
        assert record["scores"] == pytest.approx(reference[record["id"]]["scores"], abs=1e-5)


def test_hub_id_from_a_local_hub_cache_offline(bigbird, tiny_models, tmp_path):
    home = tmp_path / "hf-home"
    repo = home / "hub" / "models--tiny-org--bigbird-mask"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in tiny_models["mask"].iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}

    result = bigbird("mask", "-m", "tiny-org/bigbird-mask", "--text", "A new [MASK] opened.", env=env, check_rc=0)
    [record] = jsonl(result.stdout)
    assert record["model"] == "tiny-org/bigbird-mask" and len(record["predictions"][0]) == 5

    env["BIGBIRD_MODEL_MASK"] = "tiny-org/not-cached"
    result = bigbird("mask", "--text", "A new [MASK] opened.", env=env, check_rc=2)
    stderr = result.stderr.decode()
    assert result.stdout == b"" and "Traceback" not in stderr
    assert "tiny-org/not-cached" in stderr and len(stderr.strip().splitlines()) == 1


def test_wrong_kind_of_checkpoint_is_a_usage_error(bigbird, tiny_models):
    result = bigbird("summarize", "--text", "hello there", "-m", tiny_models["mask"], check_rc=2)
    assert b"summarize needs a BigBirdPegasus checkpoint" in result.stderr and b"Traceback" not in result.stderr


def test_python_dash_m_runs_the_same_app():
    result = subprocess.run([sys.executable, "-m", "bigbird_cli", "--version"], capture_output=True, check=True)
    assert result.stdout.decode().startswith("bigbird ")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_only_on_a_terminal_and_not_when_quiet(tiny_models, quiet):
    """stderr on a pseudo-terminal shows the progress counter; --quiet shows nothing (stdout stays pure JSONL)."""
    import threading

    master, slave = os.openpty()
    cmd = [bigbird_executable(), "mask", "-m", str(tiny_models["mask"]), *text_args(["a [MASK]", "b [MASK]"])]
    proc = subprocess.Popen(cmd + (["--quiet"] if quiet else []), stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()

    def drain() -> None:  # read while it runs, so a full terminal buffer can never block it
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    stdout, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    assert proc.returncode == 0 and [r["id"] for r in jsonl(stdout)] == ["text:0", "text:1"]
    if quiet:
        assert bytes(seen) == b""
    else:
        assert b"2 documents" in seen and b"mask: 2 done, 0 failed." in seen


def test_a_reader_that_goes_away_or_a_closed_stdout(tiny_models, tmp_path):
    """`| head -1` exited 1, which says documents failed; a closed stdout was a traceback after the model loaded."""
    texts = [arg for i in range(300) for arg in ("--text", f"Paris is the [MASK] of France number {i}.")]
    cmd = [bigbird_executable(), "mask", "-m", str(tiny_models["mask"]), *texts]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert json.loads(proc.stdout.readline())["id"] == "text:0"
        proc.stdout.close()  # as `head -1` does
        assert proc.wait(timeout=120) == 141
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    closed = subprocess.run(
        " ".join([*cmd[:4], "--text", "'A [MASK].'", ">&-"]), shell=True, capture_output=True, env=env
    )
    assert closed.returncode == 2 and b"stdout is closed; give -o FILE for the records." in closed.stderr
    assert b"Traceback" not in closed.stderr


@pytest.mark.parametrize(("stop", "code", "to_file"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_a_stopped_eval_keeps_its_records_and_prints_no_report(tiny_models, tmp_path, stop, code, to_file):
    """SIGTERM left eval printing a report over the part it had done, looking final, with exit 0; without -o the
    records made so far were lost with the temporary file they went through, which the message named."""
    out = tmp_path / "out.jsonl"
    stdin = b'{"id": "a", "text": "Plants grow.", "label": "positive"}\n{"id": "b", "text": "x"}\n'
    args = ["eval", "classify", "--jsonl", "-", "-m", tiny_models["classify"], *(["-o", out] if to_file else [])]
    exit_code, stdout, stderr = stopped_run(args, b"no reference", stop, stdin=stdin)  # both records are written
    assert exit_code == code
    records = [json.loads(line) for line in (out.read_text() if to_file else stdout).splitlines()]
    assert [r["id"] for r in records] == ["a", "b"] and "metrics" in records[0]  # and no report after them
    assert f"rerun with --resume -o {out if to_file else 'FILE'} to finish" in stderr
    assert "bigbird-eval-" not in stderr and "Traceback" not in stderr
