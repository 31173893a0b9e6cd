"""`bigbird bench`: time and memory of our models (and transformers on the same weights); logic in bigbird.tools.bench.

JSONL records go to stdout (or -o) as each row finishes; the table and progress go to stderr, so stdout stays
pure JSONL.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from bigbird.models.presets import PRESETS
from bigbird_cli.console import console, info
from bigbird_cli.errors import Terminated, UsageError
from bigbird_cli.jsonl import open_jsonl
from bigbird_cli.options import OutputFile, QuantizeOption, Quiet, Revision, Threads, WeightsDType

PRESET_NAMES = ", ".join(PRESETS)  # bigbird.models.presets imports no torch: help stays fast
DEFAULT_PRESET = "bigbird-roberta-base"


class BenchTask(str, Enum):
    encode = "encode"
    summarize = "summarize"
    train = "train"
    tokenize = "tokenize"


class Compare(str, Enum):
    transformers = "transformers"


def _int_list(text: str, option: str, example: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"takes comma-separated whole numbers, not {text!r}.", param_hint=option) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"takes positive numbers, e.g. {example}.", param_hint=option)
    return values


def command(
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Real architecture with random weights: {PRESET_NAMES} [default: {DEFAULT_PRESET}].",
            show_default=False,
            autocompletion=lambda incomplete: [name for name in PRESETS if name.startswith(incomplete)],
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Benchmark this checkpoint (Hub id or directory) instead.", show_default=False)
    ] = None,
    revision: Revision = None,
    task: Annotated[
        BenchTask,
        typer.Option(
            help="encode: encoder forward; summarize: encoder + generate; train: forward + backward; tokenize: the"
            " --model folder's tokenizer files on the --text file, as the tasks tokenize a document."
        ),
    ] = BenchTask.encode,
    text: Annotated[
        Path | None,
        typer.Option(help="--task tokenize: the text file to tokenize (e.g. 1 MB of real text).", show_default=False),
    ] = None,
    seq_lens: Annotated[
        str | None,
        typer.Option(
            help="Input lengths in tokens, comma-separated [default: 512,1024,2048,4096, those the model's positions"
            " allow].",
            show_default=False,
        ),
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    attention: Annotated[
        str, typer.Option(help="Attention types, comma-separated: block_sparse, original_full.")
    ] = "block_sparse",
    threads: Threads = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: WeightsDType = None,
    repeat: Annotated[int, typer.Option(min=1, help="Timed calls per row (after warm-up).")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls per row first.")] = 1,
    num_beams: Annotated[int, typer.Option(min=1, help="Beams for --task summarize.")] = 5,
    new_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Tokens generated per input for --task summarize [default: the checkpoint's max_length].",
            show_default=False,
        ),
    ] = None,
    mixed: Annotated[
        bool,
        typer.Option(
            "--mixed",
            help="--task summarize: the --seq-lens are the documents of one mixed-length batch, summarized as "
            "`bigbird summarize` does at each --batch-sizes (beside batch size 1), in documents per hour.",
        ),
    ] = False,
    compare: Annotated[
        Compare | None,
        typer.Option(
            help="Also run the same weights in transformers, interleaved; adds the ratio theirs/ours.",
            show_default=False,
        ),
    ] = None,
    quantize: QuantizeOption = None,
    output: OutputFile = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw time and memory against length to this PNG (needs matplotlib).", show_default=False),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Measure speed and peak memory: median/min/max seconds, tokens/s and peak memory per row, as JSONL.

    With **--compare transformers** every row also times transformers on the same weights, in the same
    process, interleaved call by call, and reports **ratio** = transformers seconds / ours.

    With **--mixed** (summarize) the --seq-lens are one batch of documents of those lengths, each encoded alone
    and decoded up to --batch-sizes together, as `bigbird summarize` runs a folder; every row also runs them one
    at a time, interleaved, and reports documents per hour and the speedup over batch size 1.

    **Example:** bigbird bench --seq-lens 1024,2048,4096 --threads 2 --compare transformers

    **Example:** bigbird bench --preset bigbird-pegasus-large --task summarize --mixed --seq-lens 1500,2500,4000
    --batch-sizes 1,8 --new-tokens 128

    With **--task tokenize** it times the --model folder's tokenizer files (spiece.model, tokenizer.json) on the
    --text file as the tasks tokenize a document, in turn round by round, in seconds per MB, with whether they
    gave the same ids; --threads then pins the cores both libraries share.

    **Example:** bigbird bench --task tokenize --model ./my-model --text book.txt --repeat 7
    """
    from bigbird.tools.bench import BenchError, BenchSpec

    spec = BenchSpec(
        preset=None if model else (preset or DEFAULT_PRESET),
        model=model,
        revision=revision,
        task=task.value,
        seq_lens=None if seq_lens is None else _int_list(seq_lens, "--seq-lens", "512,1024"),
        batch_sizes=_int_list(batch_sizes, "--batch-sizes", "1,8"),
        attentions=[a.strip() for a in attention.split(",") if a.strip()],
        threads=threads,
        device=device,
        dtype=dtype.value if dtype else "float32",
        repeat=repeat,
        warmup=warmup,
        num_beams=num_beams,
        new_tokens=new_tokens,
        mixed=mixed,
        compare=compare.value if compare else None,
        quantize=quantize.value if quantize else None,
        text=None if text is None else str(text),
    )
    if model and preset:
        raise UsageError("name the weights with one of --preset and --model, not both.")
    if plot is not None and spec.task == "tokenize":
        raise BenchError("--plot draws time against sequence length, which --task tokenize does not measure.")
    if plot is not None:
        from bigbird.eval.report import require_plot

        require_plot(plot, BenchError)  # refused before any row is measured
        if output is not None and str(output) != "-" and Path(output).resolve() == Path(plot).resolve():
            raise BenchError(f"-o {output} is also the --plot file; the figure would replace the records.")
    records = measure(spec, output, plot, quiet)
    if not quiet:
        from rich.console import Console

        # Off a terminal rich would squeeze the table into 80 columns; a log file can take the full width.
        wide = console if console.is_terminal else Console(stderr=True, highlight=False, width=220)
        wide.print(tokenize_table(records) if spec.task == "tokenize" else results_table(records))


def measure(spec: Any, output: Path | None, plot: Path | None, quiet: bool) -> list[dict[str, Any]]:
    """Run the benchmark, writing each row's record as it is measured, then the plot; the records. A stop
    (Ctrl-C, SIGTERM) says how many rows are written; a measurement that fails (out of memory at a large batch) is
    a BenchError."""
    from bigbird.tasks.documents import describe
    from bigbird.tools.bench import BenchError, run_bench
    from bigbird.tools.bench import plot as draw

    from ..runner import sigterm_stops_in_order

    records: list[dict[str, Any]] = []
    try:
        with sigterm_stops_in_order():
            rows = run_bench(spec, progress=None if quiet else info)
            with open_jsonl(output) as writer:
                for record in rows:
                    writer.write(record)
                    records.append(record)
        if plot is not None:
            draw(records, plot)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (timeout, Slurm): the rows written so far are whole
        terminated = isinstance(stop, Terminated)
        said = f"{'terminated' if terminated else 'interrupted'}; the {len(records)} rows measured so far are written."
        raise (Terminated if terminated else KeyboardInterrupt)(said) from None
    except (RuntimeError, MemoryError) as exc:  # out of memory at a large batch or length, and the like
        raise BenchError(f"the measurement failed: {describe(exc)}") from None
    return records


def where_it_ran(record: dict[str, Any]) -> str:
    """The CPU (with its family/model/stepping), its ISA, torch and the kernels chosen, in one line: e.g. "AMD EPYC
    26/2/1 (avx2 avx512f avx512_vnni), torch 2.13.0, float32 kernels onednn ×3 mkl ×1, int8 kernels fbgemm ×2, int8
    weights ±127" (cross-attention's kernels too where a generate ran)."""
    machine, chosen = record.get("machine", {}), record.get("kernels", {})

    def kernels_of(kind: str, override: str, variable: str) -> str:
        counts = Counter(chosen.get(kind, {}).values())
        text = f", {kind.replace('_', '-')} kernels " + (
            " ".join(f"{name} ×{n}" for name, n in counts.most_common()) or "none timed"
        )
        forced = chosen.get(override, "auto")
        return text + (f" ({variable}={forced})" if forced != "auto" else "")

    torch_version = record.get("versions", {}).get("torch", "?")
    generation = f" {machine['cpu_generation']}" if machine.get("cpu_generation") else ""
    line = f"{machine.get('cpu', '?')}{generation} ({' '.join(machine.get('isa', []))}), torch {torch_version}"
    line += kernels_of("float32", "override", "BIGBIRD_KERNELS")
    if chosen.get("bfloat16"):
        line += kernels_of("bfloat16", "override", "BIGBIRD_KERNELS")
    if record.get("quantize"):
        line += kernels_of("int8", "int8_override", "BIGBIRD_INT8_KERNELS")
        line += f", int8 weights ±{chosen.get('int8_weight_levels', '?')}"
    if chosen.get("cross_attention"):
        line += kernels_of("cross_attention", "cross_attention_override", "BIGBIRD_CROSS_ATTENTION")
    return line


def mib(n: int) -> str:
    """Bytes as whole MiB, with thousands separators."""
    return f"{n / 2**20:,.0f}"


def mixed_cells(r: dict[str, Any]) -> list[str]:
    """A --mixed row's documents per hour, and beside it batch size 1's (absent from the batch-size-1 row)."""
    if "batch1" not in r:
        return [f"{r['docs_per_hour']:,.0f}", "", "", "", ""]
    same = "same tokens" if r["same_tokens_as_batch1"] else "other tokens"
    one = r["batch1"]
    speedup = f"{r['speedup_vs_batch1']:.2f}×"
    return [f"{r['docs_per_hour']:,.0f}", f"{one['median_s']:.3f}", f"{one['docs_per_hour']:,.0f}", speedup, same]


def compare_cells(r: dict[str, Any]) -> list[str]:
    """transformers' times and peak on the same row, the ratio, and how close its numbers are to ours."""
    t = r["transformers"]
    if "max_abs_diff" in r:
        agreement = f"{r['max_abs_diff']:.1e}"
    else:
        agreement = "same tokens" if r.get("same_tokens") else "other tokens"
    ratio = f"{r['ratio']:.2f}×"
    times = [f"{t['median_s']:.3f}", f"{t['min_s']:.3f}", f"{t['max_s']:.3f}"]
    return [*times, mib(t["peak_mem_bytes"]), ratio, agreement]


def results_table(records: list[dict[str, Any]]):
    """The records as a rich table: ours, then int8's or a half-precision dtype's speedup over float32 when
    present, then transformers and the ratio."""
    from rich.table import Table

    first = records[0] if records else {}
    low = "int8" if first.get("quantize") else first.get("dtype", "")  # what runs beside float32, if anything
    weights = "int8 linear layers vs float32" if first.get("quantize") else first.get("dtype", "")
    if any("fp32" in r for r in records) and not first.get("quantize"):
        weights += " vs float32"
    title = f"bigbird bench: {first.get('model', '')} {first.get('task', '')} ({weights}, "
    title += f"{first.get('device', '')}, {first.get('threads', '')} threads, repeat {first.get('repeat', '')})"
    if first:
        title += "\n" + where_it_ran(records[-1])  # the last record holds every kernel choice of the run
    table = Table(title=title)
    compare = any("transformers" in r for r in records)
    quantized = any("fp32" in r for r in records)
    mixed = any("documents" in r for r in records)
    for name in ("attention", "batch", "tokens", "ours s", "min", "max", "tok/s", "peak MiB"):
        table.add_column(name, justify="left" if name == "attention" else "right")
    if mixed:
        for name in ("docs/h", "batch 1 s", "batch 1 docs/h", "speedup", "vs batch 1"):
            table.add_column(name, justify="right")
    if quantized:
        for name in ("fp32 s", f"{low} speedup", "vs fp32"):
            table.add_column(name, justify="right")
    if compare:
        # With int8, the ratio is transformers' time over our int8 time, and the closeness is our float32's.
        ratio, diff = ("ratio to int8", "fp32 |diff|") if first.get("quantize") else ("ratio", "max |diff|")
        for name in ("transformers s", "min", "max", "peak MiB", ratio, diff):
            table.add_column(name, justify="right")
    for r in records:
        row = [
            r["attention"],
            str(r["batch_size"]),
            str(r["seq_len"]),
            f"{r['median_s']:.3f}",
            f"{r['min_s']:.3f}",
            f"{r['max_s']:.3f}",
            f"{r['tokens_per_s']:,.0f}",
            mib(r["peak_mem_bytes"]),
        ]
        if mixed:
            row += mixed_cells(r)
        if quantized:
            if "cosine_min" in r:
                closeness = f"cos {r['cosine_min']:.4f}"
            else:
                closeness = "same tokens" if r["same_tokens_as_fp32"] else "other tokens"
            row += [f"{r['fp32']['median_s']:.3f}", f"{r['speedup_vs_fp32']:.2f}×", closeness]
        if compare:
            row += compare_cells(r)
        table.add_row(*row)
    return table


def tokenize_table(records: list[dict[str, Any]]):
    """--task tokenize's records as a rich table: one row per tokenizer file, the serving one marked."""
    from rich.table import Table

    first = records[0] if records else {}
    title = f"bigbird bench: {first.get('model', '')} tokenize"
    if first:
        machine, versions = first["machine"], first["versions"]
        title += f" ({first['megabytes']:.2f} MB, {first['threads']} cores, repeat {first['repeat']})\n"
        title += f"{machine['cpu']} {machine['cpu_generation'] or ''}, load {machine['load_avg_1m']}, "
        title += ", ".join(f"{name} {version}" for name, version in versions.items())
    table = Table(title=title)
    for name in ("file", "serves", "class", "tokens", "median s", "min", "max", "s/MB", "same ids"):
        table.add_column(name, justify="left" if name in ("file", "class") else "right")
    for r in records:
        times = [f"{r[key]:.3f}" for key in ("median_s", "min_s", "max_s", "s_per_mb")]
        serves = "yes" if r["serves"] else ""
        same = "yes" if r["same_ids"] else "NO"
        table.add_row(r["tokenizer_file"], serves, r["tokenizer_class"], f"{r['tokens']:,}", *times, same)
    return table
