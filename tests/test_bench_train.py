"""`bigbird bench --task train`: one forward + backward of a classifier, ours (plain and with gradient
checkpointing) against transformers on the same weights, with time and peak memory for each."""

from __future__ import annotations

import gc

import pytest
import torch

from bigbird.tools import bench
from bigbird.tools.bench import BenchError, BenchSpec, run_bench


@pytest.fixture(autouse=True)
def large_blocks(monkeypatch):
    """The training step serves large blocks from the heap, as a training process does: recorded here rather than
    set for the rest of the test session's process."""
    calls: list[bool] = []
    monkeypatch.setattr(bench, "reuse_large_blocks", lambda: calls.append(True) or True)
    return calls


def test_train_step_row_compares_the_same_loss_with_transformers(large_blocks):
    """In full attention: block-sparse training draws its random blocks on each side, differently."""
    spec = BenchSpec(
        preset="tiny",
        task="train",
        seq_lens=[320],
        repeat=1,
        warmup=0,
        compare="transformers",
        threads=1,
        attentions=["original_full"],
    )
    (record,) = list(run_bench(spec))
    assert record["task"] == "train" and record["attention"] == "original_full"
    assert abs(record["loss"] - record["transformers"]["loss"]) < 1e-5  # the same weights and batch
    for side in (record, record["checkpointing"], record["transformers"]):
        assert side["median_s"] > 0 and side["peak_mem_bytes"] > 0
    assert record["ratio"] > 0 and record["checkpointing_memory_ratio"] > 0
    assert large_blocks == [True]


def test_train_step_needs_a_bigbird_classifier():
    with pytest.raises(BenchError, match="BigBird classifier"):
        list(run_bench(BenchSpec(preset="tiny-pegasus", task="train", seq_lens=[64], repeat=1, warmup=0)))


def test_each_side_is_measured_without_the_other_sides_gradients(monkeypatch):
    """A step's peak counts its own gradients only: at the start of each measurement no model of the row holds
    any (the sides share weights, not gradients, and one side's left from its own step would count in the
    next side's peak)."""
    held = []
    reset = bench.MemoryMeter.reset

    def counting_reset(self):
        params = [o for o in gc.get_objects() if isinstance(o, torch.nn.Parameter)]
        held.append(sum(p.grad is not None for p in params))
        reset(self)

    monkeypatch.setattr(bench.MemoryMeter, "reset", counting_reset)
    spec = BenchSpec(preset="tiny", task="train", seq_lens=[320], repeat=1, warmup=1, compare="transformers", threads=1)
    list(run_bench(spec))
    assert len(held) == 6 and held == [0] * 6  # 2 rounds × (ours, checkpointing, transformers)
