"""bigbird.models.heap: the process's heap keeps freed activations for reuse (reuse_freed_memory), as the CLI and each
Ray worker set it up. Counted in page faults, which are what it saves; no timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bigbird.models import heap
from bigbird_cli import app
from bigbird_cli.engines import ray as ray_engine

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="the heap policy is glibc's; elsewhere it does nothing")

# A layer's worth of activations (50 blocks of 2 MiB) allocated, written and freed, round after round, in a fresh
# process: how many bytes glibc served as mmapped blocks in the first round (handed back on free, so faulted in
# afresh every time), and the minor page faults of the last round (the steady state a long run lives in).
CHURN = """
import ctypes, json, resource, sys, torch
from bigbird.models.heap import reuse_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
from bigbird.models.heap import reuse_large_blocks
mode, floats, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode != "default":
    assert reuse_freed_memory()
if mode == "large":
    assert reuse_large_blocks()
mapped = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    mapped_before = libc.mallinfo2().hblkhd
    held = [torch.empty(floats).fill_(1.0) for _ in range(count)]
    mapped.append(libc.mallinfo2().hblkhd - mapped_before)
    while held:
        held.pop()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"mapped": mapped[0], "faults": faults}))
"""


def churn(mode: str, floats: int = 2**19, count: int = 50) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in heap.MALLOC_ENVIRONMENT}
    command = [sys.executable, "-c", CHURN, mode, str(floats), str(count)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout)


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    """glibc starts by serving 2 MiB blocks as fresh mappings (its sliding threshold starts at 128 KiB), and whether
    its heuristic then settles varies from run to run (24k faults a round in some, none in others). With the policy
    they come from the heap from the start, and the steady state faults none."""
    default, reused = churn("default"), churn("reuse")
    assert default["mapped"] >= 100 * 2**20 and reused["mapped"] == 0
    assert reused["faults"] < 1_000


def test_training_reuses_blocks_over_the_mmap_threshold_too():
    """Blocks over 32 MiB (a float32 training step's attention scores at 4096 tokens) are mapped afresh and faulted
    in on every allocation, whatever the thresholds; served from the heap, the steady state faults none."""
    large = 10 * 2**20  # 40 MiB of float32
    reused, kept = churn("reuse", large, 3), churn("large", large, 3)
    assert reused["mapped"] >= 120 * 2**20  # (how many faults that costs depends on transparent huge pages)
    assert kept["mapped"] == 0 and kept["faults"] < 1_000


@pytest.mark.parametrize("variable", heap.MALLOC_ENVIRONMENT)
def test_a_heap_the_user_tunes_is_left_alone(variable, monkeypatch):
    monkeypatch.setenv(variable, "1")
    assert heap.reuse_freed_memory() is False
    assert heap.reuse_large_blocks() is False


def test_the_cli_sets_the_heap_up_before_any_command(monkeypatch):
    calls = []
    monkeypatch.setattr(app, "reuse_freed_memory", lambda: calls.append(True))
    monkeypatch.setattr(sys, "argv", ["bigbird", "--version"])
    with pytest.raises(SystemExit):
        app.main()
    assert calls == [True]


def test_each_ray_worker_sets_its_heap_up_too(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(ray_engine, "reuse_freed_memory", lambda: calls.append(True))
    monkeypatch.chdir(tmp_path)  # the worker moves to the driver's folder: this one, restored after the test
    ray_engine.TaskWorker(lambda: None, batch_size=1, threads=None, cwd=str(tmp_path))
    assert calls == [True]
