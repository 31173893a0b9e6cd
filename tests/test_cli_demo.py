"""`make demo` (python -m bigbird_cli.demo): summarizes examples/ end to end offline, and says it is a demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import jsonl

ROOT = Path(__file__).resolve().parent.parent


def test_demo_summarizes_the_examples_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "bigbird_cli.demo", "--output-dir", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        env=env,
        timeout=300,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "RANDOM-WEIGHT" in stderr and "bigbird summarize examples/ -o summaries.jsonl" in stderr
    records = jsonl(tmp_path / "out" / "summaries.jsonl")
    examples = sorted(p.relative_to(ROOT / "examples").as_posix() for p in (ROOT / "examples").rglob("*.txt"))
    examples += sorted(p.relative_to(ROOT / "examples").as_posix() for p in (ROOT / "examples").rglob("*.md"))
    assert sorted(r["id"] for r in records) == sorted(examples)
    assert all(isinstance(r["summary"], str) and "error" not in r for r in records)
    assert any(r["chunks"] > 1 for r in records)  # the demo window is small enough to show chunking
    assert result.stdout == (tmp_path / "out" / "summaries.jsonl").read_bytes()
