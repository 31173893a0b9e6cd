"""`bigbird bench --task train`: one forward + backward of a classifier, ours (plain and with gradient
checkpointing) against transformers on the same weights, with time and peak memory for each."""

from __future__ import annotations

import pytest

from bigbird.tools.bench import BenchError, BenchSpec, run_bench


def test_train_step_row_compares_the_same_loss_with_transformers():
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


def test_train_step_needs_a_bigbird_classifier():
    with pytest.raises(BenchError, match="BigBird classifier"):
        list(run_bench(BenchSpec(preset="tiny-pegasus", task="train", seq_lens=[64], repeat=1, warmup=0)))
