"""Which matmul kernel runs here, chosen by measurement once per machine (what the CPU has is cpu.py's question,
which of torch's private ops work is private_ops.py's).

For each kind of matmul (`FLOAT32`, `INT8`, `CROSS_ATTENTION`) torch's default and the challengers are timed on
the layer's own shapes at first use; the choice is cached per (CPU model and generation, torch version) in the
user's cache directory. A challenger must beat the default by `MARGIN`, so the choice is never slower than torch's
default beyond the noise of the measurement. A choice timed while other processes loaded the CPU (`CONTENDED`) is
run by this process only, never written to the cache: the next process times it again.

  - float32: the default is `F.linear` (MKL, which skips AVX-512 on AMD CPUs); the challengers oneDNN, on the
    plain weight or on the weight packed in its own layout (a layer that picks packing keeps only the packed
    copy: `Linear.pack`). `BIGBIRD_KERNELS=mkl|onednn|onednn-packed` overrides it (`auto`: measure); a layer
    that may not pack (a tied weight) runs plain oneDNN under `onednn-packed`.
  - int8: the default is fbgemm (torch's own dynamic int8 linear; cheap per call, so it wins decoder steps);
    the challenger oneDNN (its fused activations win long inputs on some CPUs). Both are handed the same int8
    weights and the same activation scale, so they give the same numbers. `BIGBIRD_INT8_KERNELS=fbgemm|onednn`
    overrides it.
  - cross-attention of generation (`CROSS_ATTENTION`): the default is torch's attention; the challenger
    oneDNN's grouped convolutions on packed keys/values (see cross_attention.py), timed on a decoder step's
    first call per head layout and source length. `BIGBIRD_CROSS_ATTENTION=sdpa|onednn` overrides it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import cpu, private_ops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """One kind of matmul whose kernel is chosen by measurement."""

    name: str
    default: str  # torch's own path: kept unless a challenger beats it by MARGIN
    candidates: tuple[str, ...]  # every kernel that can run it, timed against each other under `auto`
    override: str  # the environment variable that forces one

    @property
    def key_prefix(self) -> str:
        """What starts this kind's keys in the choices (float32's have none: caches from before the others)."""
        return "" if self.name == "float32" else f"{self.name} "


FLOAT32 = Kind("float32", "mkl", ("mkl", "onednn", "onednn-packed"), "BIGBIRD_KERNELS")
# bfloat16 models' matmuls: the same kernels as float32's, chosen apart (bfloat16 has its own speeds).
BFLOAT16 = Kind("bfloat16", "mkl", FLOAT32.candidates, "BIGBIRD_KERNELS")
INT8 = Kind("int8", "fbgemm", ("fbgemm", "onednn"), "BIGBIRD_INT8_KERNELS")
# A training step's float32 matmuls (backprop.py): forward, input gradient and weight gradient, on plain weights.
TRAINING = Kind("training", "mkl", ("mkl", "onednn"), "BIGBIRD_KERNELS")
# A training step's block-sparse middle rows: torch's fused attention over the window's and the other blocks' keys
# concatenated, or the two as spelled-out softmaxes merged through their log-sum-exps (attention.py).
TRAINING_ATTENTION = Kind("training-attention", "joint", ("joint", "merged"), "BIGBIRD_TRAINING_ATTENTION")
# onednn-bf16 is never timed: an int8 model's keys/values take it by rule (cross_attention.py), since it changes
# the numbers; forced on a float32 model it means onednn.
CROSS_ATTENTION = Kind("cross-attention", "sdpa", ("sdpa", "onednn", "onednn-bf16"), "BIGBIRD_CROSS_ATTENTION")
KINDS = (FLOAT32, BFLOAT16, TRAINING, TRAINING_ATTENTION, INT8, CROSS_ATTENTION)
# Training's choices are cached even when timed under load: the kernels round differently, and a run resumed in
# a new process must compute what the unbroken run would have (the same seed, the same model, bit for bit).
REPRODUCIBLE = (TRAINING, TRAINING_ATTENTION)
CANDIDATES = FLOAT32.candidates
MARGIN = 0.05  # how much faster than the default a challenger must be to be chosen
SAMPLE_ROWS = 256  # rows of the input timed: a long input's matmuls run at the speed they reach here
ROUNDS = 3  # timed calls per candidate (interleaved, the fastest counts), after one warm-up call each
MORE_ROUNDS = 6  # further rounds when the first ones leave the decision within 2 * MARGIN of flipping
# Above this share of the machine's CPU time used by other processes while the kernels were timed, the choice is not
# cached: such timings measure the load as much as the kernels (a choice timed beside a test run kept a summarize
# benchmark 20% slower on later quiet runs). One other busy thread on a 2-core machine is 0.5; a quiet machine's
# background a few percent.
CONTENDED = 0.25
# /proc/stat counts busy time in clock ticks (10 ms): a timing shorter than this much machine time (wall seconds
# times CPUs, 20 ticks) can't tell the load, and counts as quiet, as where /proc/stat can't be read.
LOAD_WINDOW = 0.2
PROC_STAT = Path("/proc/stat")
LOAD_ROUNDS = 100  # at most this many more timings to span LOAD_WINDOW (a clock that stands still ends the wait)


def cache_path() -> Path:
    """Where the choices are kept: $BIGBIRD_CACHE_DIR, else $XDG_CACHE_HOME/bigbird-cli, else ~/.cache/bigbird-cli."""
    root = os.environ.get("BIGBIRD_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "bigbird-cli"
    )
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{cpu.cpu_identity()}-torch-{torch.__version__}").strip("-")
    return Path(root) / f"kernels-{slug}.json"


_chosen: dict[str, str] = {}  # the choices this process runs, by shape key
_measured: dict[str, dict[str, float]] = {}  # the microbenchmark numbers this process took, by shape key
_contended: dict[str, float] = {}  # others' share of the machine while a choice was timed, where over CONTENDED


def shape_key(in_features: int, out_features: int, post_op: str, rows: int, kind: Kind = FLOAT32) -> str:
    """The choice holds for one kind of matmul, weight shape, fused activation and thread count, at few or many
    input rows."""
    size = "rows<=16" if rows <= 16 else "rows<=256" if rows <= 256 else "rows>256"
    return f"{kind.key_prefix}{in_features}x{out_features} {post_op} {size} threads={torch.get_num_threads()}"


def power_of_two_above(n: int) -> int:
    """The smallest power of two at least n: one key for a range of lengths that vary from input to input, so that
    a new length doesn't time the kernels again."""
    return 1 << max(0, n - 1).bit_length()


def cross_attention_key(heads: int, head_dim: int, source_len: int, queries: int) -> str:
    """The choice holds for one head layout and thread count, at a source length up to a power of two, and few
    or many query rows per input."""
    source = power_of_two_above(source_len)
    size = "queries<=16" if queries <= 16 else "queries>16"
    prefix = CROSS_ATTENTION.key_prefix
    return f"{prefix}{heads}x{head_dim} source<={source} {size} threads={torch.get_num_threads()}"


def training_attention_key(
    heads: int, head_dim: int, blocks: int, block_size: int, slots: int, dtype: torch.dtype
) -> str:
    """The choice holds for one head layout, block size, count of other blocks, type and thread count, at a number
    of middle query blocks up to a power of two."""
    prefix = TRAINING_ATTENTION.key_prefix
    return (
        f"{prefix}{heads}x{head_dim} rows<={power_of_two_above(blocks)} bs={block_size} slots={slots} "
        f"{str(dtype).removeprefix('torch.')} threads={torch.get_num_threads()}"
    )


def kind_of(key: str) -> Kind:
    """The kind of matmul a choice's key belongs to."""
    return next((kind for kind in KINDS if kind.key_prefix and key.startswith(kind.key_prefix)), FLOAT32)


def choose(key: str, names: list[str], run: Callable[[str], Any], kind: Kind = FLOAT32) -> str:
    """The kernel of `names` (those that work here) to run for `key`: the override, this process's or the cache
    file's choice, or the winner of timing `run(name)` for each name now."""
    if len(names) == 1:
        return names[0]
    forced = override(kind)
    if forced != "auto":
        if forced in names:
            choice = forced
        else:
            # The nearest kernel that runs here: a layer that may not pack (a tied weight) still runs oneDNN when
            # onednn-packed is forced; otherwise torch's default.
            nearest = forced.split("-")[0]
            choice = nearest if nearest in names else kind.default if kind.default in names else names[0]
            log.debug("%s=%s is not available here; using %s", kind.override, forced, choice)
        _chosen[key] = choice  # what ran, for bench's records
        return choice
    choice = _chosen.get(key)
    if choice in names:
        return choice
    choice, timed = _load().get(key, (None, set()))
    if choice not in names or not set(names) <= timed:  # a kernel the cached choice was not timed against
        _measured[key], load = _measure_and_load(names, run, kind.default)
        choice = decide(_measured[key], kind.default)
        if load > CONTENDED and kind not in REPRODUCIBLE:
            _contended[key] = load
            log.debug("%s: timed while other processes used %.0f%% of the CPU; not cached", key, load * 100)
        else:
            _save(key, choice, _measured[key])
    _chosen[key] = choice
    return choice


def settled(key: str, choice: str) -> None:
    """Record a kernel chosen by rule rather than by timing (an int8 model's bfloat16 cross-attention), so that
    bench's records name what ran."""
    _chosen[key] = choice


def override(kind: Kind) -> str:
    """The kernel the environment forces for `kind`, or "auto". A value that names no kernel of the kind (a typo)
    is warned about once and means "auto": silently running torch's default instead would hide the mistake."""
    value = os.environ.get(kind.override, "auto").strip().lower() or "auto"
    if value != "auto" and value not in kind.candidates:
        _warn_once(
            f"{kind.override}={value!r} names no {kind.name} kernel (auto, {', '.join(kind.candidates)}); "
            "choosing by measurement."
        )
        return "auto"
    return value


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def measure(
    names: list[str],
    run: Callable[[str], Any],
    default: str = FLOAT32.default,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Seconds per call of each kernel: the fastest of `ROUNDS` interleaved calls, after a warm-up call each.

    The choice is kept for good, so a close call (a load spike too short for `CONTENDED` to see can make it)
    gets `MORE_ROUNDS` more before it is decided: the fastest of more calls is nearer each kernel's unloaded speed.
    """
    for name in names:
        run(name)
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(ROUNDS + MORE_ROUNDS):
        if round_ == ROUNDS and not _close(best, default):
            break
        for name in names:
            start = clock()
            run(name)
            best[name] = min(best[name], clock() - start)
    return best


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds at one moment: the whole machine's busy and total time since boot, and this process's own."""

    busy: float
    total: float
    own: float


def cpu_times(stat: Path | None = None) -> CpuTimes | None:
    """Now's CPU times, from /proc/stat's first line (busy: user, nice, system, irq, softirq and steal; idle and
    iowait are not; guest time is already in user), or None where it can't be read (macOS, Windows)."""
    try:
        ticks = [int(n) for n in (stat or PROC_STAT).read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, idle, iowait, irq, softirq, steal = ticks
        hertz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    busy = user + nice + system + irq + softirq + steal
    return CpuTimes(busy / hertz, (busy + idle + iowait) / hertz, time.process_time())


def others_cpu_share(before: CpuTimes | None, after: CpuTimes | None) -> float:
    """The share of the machine's CPU time (0 to 1) that other processes used between two readings: its busy time
    less this process's. 0 where it can't be told (no reading, or a span under `LOAD_WINDOW`)."""
    if before is None or after is None or after.total - before.total < LOAD_WINDOW:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return min(1.0, max(0.0, others / (after.total - before.total)))


def _measure_and_load(names: list[str], run: Callable[[str], Any], default: str) -> tuple[dict[str, float], float]:
    """`measure`'s seconds, and the other processes' share of the CPU while they were taken.

    A decoder step's shapes time in a few milliseconds, far under what /proc/stat's ticks can tell, yet a choice
    timed under load is as wrong for them: such timings are taken again (each kernel keeps its fastest call)
    until they span `LOAD_WINDOW`, a tenth of a second on two cores, once per machine and shape.
    """
    start = cpu_times()
    seconds = measure(names, run, default)
    end = cpu_times()
    for _ in range(LOAD_ROUNDS):
        if start is None or end is None or end.total - start.total >= LOAD_WINDOW:
            break
        again = measure(names, run, default)
        seconds = {name: min(s, again[name]) for name, s in seconds.items()}
        end = cpu_times()
    return seconds, others_cpu_share(start, end)


def _close(seconds: dict[str, float], default: str) -> bool:
    """Whether the fastest challenger is within 2 * MARGIN of the default's time, either way."""
    challengers = [s for name, s in seconds.items() if name != default]
    if default not in seconds or not challengers:
        return False
    return abs(min(challengers) / seconds[default] - 1) < 2 * MARGIN


def decide(seconds: dict[str, float], default: str = FLOAT32.default) -> str:
    """The default unless a candidate beats it by `MARGIN`."""
    limit = seconds[default] * (1 - MARGIN)
    fast = {name: s for name, s in seconds.items() if s < limit}
    return min(fast, key=fast.__getitem__) if fast else default


def summary() -> dict[str, Any]:
    """What runs here, for bench's records: the choices this process made for each kind of matmul (with the
    timings behind those it measured; `contended`: those timed under load, by others' share of the CPU, which were
    not cached), the int8 weight range, and which private ops are in use."""

    def chosen(kind: Kind) -> dict[str, str]:
        return {key.removeprefix(kind.key_prefix): c for key, c in _chosen.items() if kind_of(key) is kind}

    return {
        "override": override(FLOAT32),
        "int8_override": override(INT8),
        "cross_attention_override": override(CROSS_ATTENTION),
        "float32": chosen(FLOAT32),
        "bfloat16": chosen(BFLOAT16),
        "training": chosen(TRAINING),
        "training_attention": chosen(TRAINING_ATTENTION),
        "int8": chosen(INT8),
        "cross_attention": chosen(CROSS_ATTENTION),
        "measured_ms": {key: {n: round(s * 1e3, 3) for n, s in v.items()} for key, v in _measured.items()},
        "contended": {key: round(share, 2) for key, share in _contended.items()},
        "int8_weight_levels": cpu.int8_weight_levels(),
        "private_ops": [name for name in private_ops.NAMES if private_ops.private_op(name) is not None],
    }


def _load() -> dict[str, tuple[str, set[str]]]:
    """The cache file's choices: each with the kernels it was timed against."""
    try:
        return {k: (v["choice"], set(v["ms"])) for k, v in json.loads(cache_path().read_text())["choices"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save(key: str, choice: str, seconds: dict[str, float]) -> None:
    """Add one choice to the cache file (read again first: other processes may have added theirs)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
        data["choices"]  # noqa: B018  (a file without it is rewritten)
    except (OSError, ValueError, KeyError, TypeError):
        data = {"cpu": cpu.cpu_identity(), "isa": cpu.isa(), "torch": torch.__version__, "choices": {}}
    data["choices"][key] = {"choice": choice, "ms": {n: round(s * 1e3, 3) for n, s in seconds.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f, indent=1)
        os.replace(f.name, path)
    except OSError as error:  # a read-only home still runs, it just measures again next time
        log.debug("could not write the kernel choices to %s: %s", path, error)
