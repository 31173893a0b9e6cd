"""console.py: what the user reads on stderr; here the progress lines written where stderr is no terminal."""

from __future__ import annotations

from conftest import jsonl


def test_progress_lines_come_at_a_steady_interval():
    from types import SimpleNamespace

    from bigbird_cli.console import ProgressLog

    now = [100.0]
    lines: list[str] = []
    log = ProgressLog(10, lines.append, interval=30, clock=lambda: now[0])
    counts = SimpleNamespace(ok=0, failed=0, skipped=2)
    advance, stop = log.bind(counts)
    for second in range(1, 8):  # a record every 10 s, the third one failed
        now[0] += 10
        counts.ok += second != 3
        counts.failed += second == 3
        advance()
    stop()
    assert lines == [
        "progress: 3/8 documents, 0.1 documents/s, 1 failed, ETA 50s",
        "progress: 6/8 documents, 0.1 documents/s, 1 failed, ETA 20s",
    ]
    unknown = ProgressLog(None, lines.append, interval=0, clock=lambda: now[0])
    unknown.bind(SimpleNamespace(ok=90, failed=0, skipped=0))
    now[0] += 3600
    unknown.advance()
    assert lines[-1] == "progress: 90 documents, 0.025 documents/s, 0 failed"


def test_a_run_logging_to_a_file_prints_plain_progress_lines(bigbird, tiny_models, corpus):
    """stderr not a terminal (here a pipe, as with nohup or Slurm): plain lines, no progress bar's control codes."""
    result = bigbird(
        "classify", corpus, "-m", tiny_models["classify"], env={"BIGBIRD_PROGRESS_SECONDS": "0"}, check_rc=0
    )
    lines = result.stderr.decode().splitlines()
    progress = [line for line in lines if line.startswith("progress: ")]
    assert [line.split(",")[0] for line in progress] == [f"progress: {n}/3 documents" for n in (1, 2, 3)]
    assert all("0 failed" in line and "documents/s" in line and "ETA" in line for line in progress)
    assert not any(c in result.stderr.decode() for c in "\r\x1b\b")


def test_a_bad_documents_message_is_one_line_whatever_its_file_is_named(bigbird, tiny_models, tmp_path):
    """A file named with a newline (or a terminal's escape codes) made its error two lines, or coloured the
    terminal: control characters are written as escapes in messages, the record's id keeps the name as it is."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad\nname\x1b[31m\u2028.txt").write_bytes(b"")
    (folder / "good.txt").write_text("A short text.")
    result = bigbird("classify", folder, "-m", tiny_models["classify"], "-q", check_rc=1)
    assert result.stderr.decode().split("\n")[:-1] == [r"error: bad\nname\x1b[31m\u2028.txt: the file is empty."]
    ids = sorted(record["id"] for record in jsonl(result.stdout))
    assert ids == ["bad\nname\x1b[31m\u2028.txt", "good.txt"]
