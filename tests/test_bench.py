"""`bigbird bench` on the tiny preset: records, comparisons, memory, errors; through bigbird.tools.bench and the CLI.

Speed itself is never asserted here (timings depend on the machine); the tests check what is reported and that
the implementations being compared compute the same numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from conftest import cli, jsonl, one_sentence

from bigbird.models import cpu, kernels, private_ops
from bigbird.models.presets import PRESETS, config_from_name
from bigbird.tools.bench import (
    DEFAULT_SEQ_LENS,
    BenchError,
    BenchSpec,
    Contender,
    MemoryMeter,
    default_seq_lens,
    others_bytes,
    run_bench,
)

TIMING_FIELDS = {"median_s", "min_s", "max_s", "tokens_per_s", "peak_mem_bytes"}
RECORD_FIELDS = TIMING_FIELDS | {
    "task",
    "model",
    "attention",
    "seq_len",
    "batch_size",
    "dtype",
    "device",
    "threads",
    "repeat",
    "warmup",
    "mem_base_bytes",
    "mem_scope",
    "parameters",
    "tokenizer",
    "versions",
    "machine",
    "kernels",
}
has_transformers = importlib.util.find_spec("transformers") is not None


def tiny(**kwargs) -> BenchSpec:
    return BenchSpec(**{"preset": "tiny", "seq_lens": [256], "repeat": 1, **kwargs})


def test_tiny_preset_records():
    spec = tiny(seq_lens=[256, 320], batch_sizes=[1, 2], attentions=["block_sparse", "original_full"], repeat=2)
    records = list(run_bench(spec))
    assert [(r["attention"], r["batch_size"], r["seq_len"]) for r in records] == [
        (a, b, n) for a in ("block_sparse", "original_full") for b in (1, 2) for n in (256, 320)
    ]
    for r in records:
        assert RECORD_FIELDS <= set(r)
        assert r["task"] == "encode" and r["model"] == "tiny" and r["repeat"] == 2
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["tokens_per_s"] == pytest.approx(r["batch_size"] * r["seq_len"] / r["median_s"], rel=1e-3)
        assert r["peak_mem_bytes"] > 0
        assert "transformers" not in r and "ratio" not in r
        assert r["machine"]["cpu"] == cpu.cpu_model() and r["machine"]["isa"] == cpu.isa()
        assert r["machine"]["cpu_generation"] == cpu.cpu_generation()
        assert r["versions"]["torch"] == torch.__version__
        assert r["kernels"]["float32"] and set(r["kernels"]["float32"].values()) <= set(kernels.CANDIDATES)
        json.dumps(r)  # JSON-ready


@pytest.mark.skipif(not has_transformers, reason="transformers is not installed")
def test_compare_transformers_gives_ratios_on_the_same_weights():
    spec = tiny(seq_lens=[256, 300], attentions=["block_sparse", "original_full"], compare="transformers")
    records = list(run_bench(spec))
    assert len(records) == 4
    for r in records:
        theirs = r["transformers"]
        assert TIMING_FIELDS <= set(theirs)
        assert r["ratio"] == pytest.approx(theirs["median_s"] / r["median_s"], rel=1e-2)
        # Same weights, same attention: the speed comparison is between equal computations.
        assert r["max_abs_diff"] < 1e-4
        assert r["versions"]["transformers"]


def test_compare_without_transformers_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    with pytest.raises(BenchError, match="needs the transformers package"):
        list(run_bench(tiny(compare="transformers")))


def test_int8_reports_cosine_to_fp32():
    (record,) = run_bench(tiny(quantize="int8"))
    assert record["quantize"] == "int8"
    assert TIMING_FIELDS <= set(record["fp32"])
    assert record["speedup_vs_fp32"] == pytest.approx(record["fp32"]["median_s"] / record["median_s"], rel=1e-2)
    assert 0.9 < record["cosine_min"] <= 1.0 + 1e-6
    assert record["kernels"]["int8"] and set(record["kernels"]["int8"].values()) <= set(kernels.INT8.candidates)


def test_bfloat16_runs_beside_the_float32_model_it_comes_from():
    """A half-precision run answers "should I use it?": its speedup over the same float32 weights, and how close
    its numbers stay (the encoder's lowest per-token cosine, or whether a summary has the same tokens)."""
    (encoded,) = run_bench(tiny(dtype="bfloat16"))
    assert encoded["dtype"] == "bfloat16" and TIMING_FIELDS <= set(encoded["fp32"])
    assert encoded["speedup_vs_fp32"] == pytest.approx(encoded["fp32"]["median_s"] / encoded["median_s"], rel=1e-3)
    assert 0.99 < encoded["cosine_min"] <= 1.0 + 1e-6  # bfloat16 rounding, not another model
    spec = tiny(
        preset="tiny-pegasus", task="summarize", dtype="bfloat16", mixed=True, seq_lens=[300, 90], batch_sizes=[2]
    )
    (summarized,) = run_bench(spec)
    assert isinstance(summarized["same_tokens_as_fp32"], bool) and summarized["same_tokens_as_batch1"] is True
    assert summarized["fp32"]["docs_per_hour"] == pytest.approx(2 * 3600 / summarized["fp32"]["median_s"], rel=1e-3)


def test_int8_summarize_reports_whether_the_tokens_match_fp32():
    (record,) = run_bench(tiny(preset="tiny-pegasus", task="summarize", quantize="int8", num_beams=2, new_tokens=4))
    assert record["quantize"] == "int8" and "cosine_min" not in record
    assert isinstance(record["same_tokens_as_fp32"], bool)
    assert record["speedup_vs_fp32"] > 0
    # The int8 model's cross-attention keys/values are bfloat16 exactly where the CPU computes it natively (by rule,
    # beside the float32 model's measured choice); the record says which ran.
    bfloat16 = cpu.has_native_bfloat16() and private_ops.private_op("conv-packed-bf16") is not None
    assert ("onednn-bf16" in record["kernels"]["cross_attention"].values()) == bfloat16


def test_model_checkpoint_instead_of_a_preset(tmp_path):
    from bigbird import BigBirdConfig, BigBirdForMaskedLM
    from bigbird.tools.tiny import BIGBIRD_TINY

    BigBirdForMaskedLM(BigBirdConfig(**{**BIGBIRD_TINY, "vocab_size": 400})).save_pretrained(tmp_path)
    (record,) = run_bench(BenchSpec(preset=None, model=str(tmp_path), seq_lens=[256], repeat=1))
    assert record["model"] == str(tmp_path) and record["median_s"] > 0
    assert record["tokenizer"] is None  # a folder without tokenizer files
    (tmp_path / "tokenizer.json").write_text("{}")
    (record,) = run_bench(BenchSpec(preset=None, model=str(tmp_path), seq_lens=[256], repeat=1))
    assert record["tokenizer"] == "tokenizer.json"  # the file the checkpoint's tasks take their ids from


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (tiny(preset="bigbird-roberta-huge"), "unknown preset"),
        (tiny(seq_lens=[2048]), r"sequence lengths \[2048\] exceed the model's 1024 positions"),
        (tiny(task="summarize"), "summarize needs a BigBirdPegasus model"),
        (tiny(attentions=["sparse"]), "unknown attention"),
        (tiny(quantize="int8", dtype="bfloat16"), "int8 runs on the CPU from float32"),
        (tiny(preset=None), "exactly one of --preset and --model"),
        (tiny(mixed=True), "--mixed measures a batch of documents of mixed lengths: it needs --task summarize"),
        (tiny(preset="tiny-pegasus", task="summarize", mixed=True, quantize="int8"), "leave out --quantize"),
    ],
)
def test_refuses_impossible_specs(spec, message):
    with pytest.raises(BenchError, match=message):
        list(run_bench(spec))


def test_peak_memory_is_per_call():
    meter = MemoryMeter(torch.device("cpu"))
    if meter.scope != "rss_hwm_per_call":
        pytest.skip("the resident high-water mark can't be reset here")
    meter.reset()
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del big
    after_big = meter.peak()
    meter.reset()
    assert meter.peak() < after_big - 32 * 2**20  # the earlier peak is forgotten


def test_a_peak_leaves_out_what_only_the_other_contenders_hold(monkeypatch):
    """Shared weights count for both; a tensor only the other side holds (a plain copy of weights we repacked)
    counts for neither's peak but its own."""
    from bigbird.models.linear import Linear, quantize_int8

    ours, theirs = Linear(64, 32), Linear(64, 32, bias=False)
    theirs.weight = ours.weight  # shared, as bench shares the weights with transformers
    contenders = [Contender("ours", None, None, ours), Contender("transformers", None, None, theirs)]
    assert others_bytes(contenders, "ours") == 0 and others_bytes(contenders, "transformers") == 32 * 4  # our bias
    monkeypatch.setenv("BIGBIRD_KERNELS", "onednn-packed")
    with torch.inference_mode():
        ours(torch.randn(2, 64))
    if ours.packed:  # theirs still holds the plain weight; ours holds only the packed one
        assert others_bytes(contenders, "ours") == 64 * 32 * 4
        assert others_bytes(contenders, "transformers") == 64 * 32 * 4 + 32 * 4
    fp32 = Linear(64, 32)
    int8 = quantize_int8(fp32)  # a copy: float weights of its own, and int8 ones (one byte per weight)
    contenders = [Contender("ours", None, None, int8), Contender("fp32", None, None, fp32)]
    assert others_bytes(contenders, "fp32") == (64 * 32 + 32) * 4 + 64 * 32


def test_summarize_on_tiny_pegasus():
    spec = tiny(preset="tiny-pegasus", task="summarize", num_beams=2, new_tokens=4)
    (record,) = run_bench(spec)
    assert record["task"] == "summarize" and record["num_beams"] == 2 and record["new_tokens"] == 4
    assert record["tokens_per_s"] == pytest.approx(4 / record["median_s"], rel=1e-3)


def test_mixed_lengths_summarized_together_beside_batch_size_1():
    """The main job: documents of mixed lengths decoded together, in documents per hour, beside the same documents
    one at a time in the same row, with the same tokens; new tokens default to the checkpoint's max_length."""
    spec = tiny(preset="tiny-pegasus", task="summarize", mixed=True, seq_lens=[300, 90, 512], batch_sizes=[1, 2])
    one, two = run_bench(spec)
    assert [r["batch_size"] for r in (one, two)] == [1, 2] and "batch1" not in one
    assert one["new_tokens"] == 23  # tiny-pegasus's max_length is 24, the decoder start token included
    for r in (one, two):
        assert r["seq_lens"] == [300, 90, 512] and r["documents"] == 3 and r["seq_len"] == 902
        assert r["docs_per_hour"] == pytest.approx(3 * 3600 / r["median_s"], rel=1e-3)
        assert r["tokens_per_s"] == pytest.approx(3 * 23 / r["median_s"], rel=1e-3)
    assert two["same_tokens_as_batch1"] is True
    assert two["speedup_vs_batch1"] == pytest.approx(two["batch1"]["median_s"] / two["median_s"], rel=1e-2)


@pytest.mark.skipif(not has_transformers, reason="transformers is not installed")
def test_mixed_lengths_against_transformers_one_document_at_a_time():
    """The main job against transformers: the same documents through its generate, one at a time, in documents per
    hour; the summaries are the same tokens as ours."""
    spec = tiny(
        preset="tiny-pegasus", task="summarize", mixed=True, seq_lens=[300, 90], batch_sizes=[2], compare="transformers"
    )
    (row,) = run_bench(spec)
    theirs = row["transformers"]
    assert row["same_tokens"] is True and row["same_tokens_as_batch1"] is True
    assert theirs["docs_per_hour"] == pytest.approx(2 * 3600 / theirs["median_s"], rel=1e-3)
    assert row["ratio"] == pytest.approx(theirs["median_s"] / row["median_s"], rel=1e-2)


# --------------------------------------------------------------------------------------------------
# Through the installed `bigbird` command (the `bigbird` fixture of conftest.py runs it in a subprocess)
# --------------------------------------------------------------------------------------------------
BASE_ARGS = ("bench", "--preset", "tiny", "--repeat", "1", "--threads", "1")


@pytest.mark.skipif(not has_transformers, reason="transformers is not installed")
def test_cli_stdout_is_pure_jsonl_and_the_table_goes_to_stderr(bigbird):
    result = bigbird(*BASE_ARGS, "--seq-lens", "256,288", "--compare", "transformers", check_rc=0)
    records = jsonl(result.stdout)
    assert [r["seq_len"] for r in records] == [256, 288]
    assert all(r["ratio"] > 0 and r["max_abs_diff"] < 1e-4 for r in records)
    stderr = result.stderr.decode()
    assert "bigbird bench: tiny encode" in stderr and "transformers s" in stderr and "ratio" in stderr
    machine = records[0]["machine"]
    generation = f" {machine['cpu_generation']}" if machine["cpu_generation"] else ""
    assert f"{machine['cpu']}{generation} (" in stderr and "float32 kernels" in stderr
    assert f"torch {records[0]['versions']['torch']}" in stderr


def test_cli_output_file_quiet_and_plot(bigbird, tmp_path):
    out, png = tmp_path / "bench.jsonl", tmp_path / "bench.png"
    result = bigbird(*BASE_ARGS, "--seq-lens", "256,288", "-o", out, "--plot", png, "--quiet")
    assert result.stdout == b""
    if importlib.util.find_spec("matplotlib") is None:  # refused before any row is measured
        assert result.returncode == 2 and "--plot needs matplotlib" in result.stderr.decode()
        assert not out.exists()
    else:
        records = jsonl(out)
        assert len(records) == 2 and all(RECORD_FIELDS <= set(r) for r in records)
        assert result.returncode == 0, result.stderr.decode()
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_a_plot_path_it_cant_write_before_measuring(bigbird, tmp_path):
    out = tmp_path / "bench.jsonl"
    result = bigbird(*BASE_ARGS, "--seq-lens", "256", "-o", out, "--plot", tmp_path / "bench.svgz2", check_rc=2)
    assert "give a file ending in one of" in result.stderr.decode() and not out.exists()


def test_cli_refuses_a_plot_that_would_replace_the_records(bigbird, tmp_path):
    """-o X --plot X wrote the records, then the figure over them, exit 0."""
    out = tmp_path / "bench.png"
    result = bigbird(*BASE_ARGS, "--seq-lens", "256", "-o", out, "--plot", out, check_rc=2)
    assert "is also the --plot file" in result.stderr.decode() and not out.exists()


def test_cli_errors_are_one_line_and_exit_2(bigbird):
    result = bigbird(*BASE_ARGS, "--seq-lens", "4096", check_rc=2)
    assert result.stdout == b""
    assert "exceed the model's 1024 positions" in result.stderr.decode()
    bigbird(*BASE_ARGS, "--seq-lens", "abc", check_rc=2)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--device", "garbage"), {}, "--device takes cpu, cuda, cuda:N or mps, not 'garbage'."),
        (("--device", "mps"), {}, "--device mps: no such device is available on this machine."),
        (("--quantize", "int8"), {"BIGBIRD_PRIVATE_OPS": "0"}, "no working int8 kernel"),
    ],
)
def test_cli_refuses_what_this_machine_cant_run_in_one_line(bigbird, args, env, message):
    if args[1] == "mps" and torch.backends.mps.is_available():
        args = ("--device", "cuda:99")  # the same refusal on a Mac
        message = "--device cuda:99: no such device"
    result = bigbird(*BASE_ARGS, "--seq-lens", "256", *args, env=env, check_rc=2)
    stderr = result.stderr.decode()
    assert message in stderr.splitlines()[-1] and "Traceback" not in stderr and result.stdout == b""


def test_plot_without_matplotlib_is_a_bench_error(monkeypatch, tmp_path):
    """bench --plot shares eval's matplotlib check, and keeps its own error type (so its own exit code)."""
    from bigbird.tools.bench import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError
    with pytest.raises(BenchError, match="--plot needs matplotlib"):
        plot([], tmp_path / "bench.png")


def test_cli_a_measurement_that_fails_is_one_sentence(bigbird):
    """Out of memory at a huge batch was a traceback with exit 1."""
    result = bigbird(*BASE_ARGS, "--seq-lens", "256", "--batch-sizes", "1000000000", check_rc=2)
    assert "error: the measurement failed:" in result.stderr.decode() and b"Traceback" not in result.stderr


def test_cli_sigterm_stops_in_order(tmp_path):
    """SIGTERM ended bench at once, without a word."""
    import signal

    from conftest import stopped_run

    out = tmp_path / "rows.jsonl"
    args = [*BASE_ARGS, "--seq-lens", "256,512,768", "--repeat", "200", "-o", out]
    code, _, stderr = stopped_run(args, b"batch", signal.SIGTERM, times=2)  # the first row is written
    assert code == 143
    assert "terminated; the 1 rows measured so far are written." in stderr
    assert len(jsonl(out)) == 1


def test_cli_a_pegasus_checkpoint_of_another_head_says_what_bench_runs(bigbird, tmp_path):
    """It said "weight final_logits_bias is missing from the checkpoint"."""
    from bigbird.tools.tiny import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path / "cls", "pegasus", "sequence_classification")
    result = bigbird("bench", "--model", checkpoint, "--seq-lens", "64", check_rc=2)
    assert "bench runs BigBirdPegasusForConditionalGeneration checkpoints, and" in result.stderr.decode()
    assert "BigBirdPegasusForSequenceClassification one." in result.stderr.decode()


def test_cli_int8_against_transformers_says_what_each_column_compares(bigbird):
    """The ratio is over our int8 time and the closeness is our float32's; both columns read as plain ones."""
    result = bigbird(*BASE_ARGS, "--seq-lens", "256", "--quantize", "int8", "--compare", "transformers", check_rc=0)
    stderr = result.stderr.decode()
    assert "ratio to int8" in stderr and "fp32 |diff|" in stderr


@pytest.mark.parametrize("preset", list(PRESETS))
def test_default_lengths_fit_every_preset(preset):
    positions = config_from_name(preset).max_position_embeddings
    lengths = default_seq_lens(positions)
    assert lengths and max(lengths) <= positions
    assert lengths == [n for n in DEFAULT_SEQ_LENS if n <= positions] or lengths == [positions]


def test_cli_tiny_preset_runs_with_its_defaults(bigbird):
    """`bigbird bench --preset tiny` with no lengths measures those its 1024 positions allow, not 2048 and 4096."""
    result = bigbird("bench", "--preset", "tiny", "--repeat", "1", "--warmup", "0", "--threads", "1", "-q", check_rc=0)
    assert [json.loads(line)["seq_len"] for line in result.stdout.splitlines()] == [512, 1024]


def test_bench_plot_checks_matplotlib_before_benchmarking(offline_hub, monkeypatch):
    import bigbird.tools.bench as bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("benchmarked before checking --plot"))
    result = cli("bench", "--preset", "tiny", "--plot", "x.png")
    assert result.exit_code == 2 and "matplotlib" in result.output and one_sentence(result.output)
