"""Which CPU kernels run here: what the CPU has, which of torch's private ops work, and which matmul is fastest.

Three questions, answered once per process (the last one once per machine):

* **What the CPU has.** /proc/cpuinfo's flags (torch's own capability string where that file is missing). On
  x86 CPUs without VNNI, oneDNN's uint8 × int8 matmul adds pairs of products in int16 with saturation
  (`vpmaddubsw`): 255 × 127 × 2 overflows it. There `int8_weight_levels` keeps weights to 7 bits (±63), so
  that a pair stays within 255 × 64 × 2 < 2¹⁵ and the int8 result is exact. `BIGBIRD_INT8_SAFE=1` forces
  this on any CPU (the tests use it), `=0` forbids it.
* **Whether a private op works.** `_linear_pointwise`, `qlinear_pointwise`, the packed `_convolution_pointwise`
  and the flash attention that returns its log-sum-exp are not public API. Each is called once on a tiny input
  and compared with the public path; a missing op, a changed signature or wrong numbers turn it off with a
  debug log line. `BIGBIRD_PRIVATE_OPS=0` turns them all off (the public path everywhere).
* **Which matmul is fastest.** For each kind of matmul (`FLOAT32`, `INT8`, `CROSS_ATTENTION`) torch's default and
  the challengers are timed on the layer's own shapes at first use; the choice is cached per (CPU model and
  generation, torch version) in the user's cache directory. A challenger must beat the default by `MARGIN`, so
  the choice is never slower than torch's default beyond the noise of the measurement.
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
import platform
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

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
INT8 = Kind("int8", "fbgemm", ("fbgemm", "onednn"), "BIGBIRD_INT8_KERNELS")
# onednn-bf16 is never timed: an int8 model's keys/values take it by rule (cross_attention.py), since it changes
# the numbers; forced on a float32 model it means onednn.
CROSS_ATTENTION = Kind("cross-attention", "sdpa", ("sdpa", "onednn", "onednn-bf16"), "BIGBIRD_CROSS_ATTENTION")
KINDS = (FLOAT32, INT8, CROSS_ATTENTION)
CANDIDATES = FLOAT32.candidates
MARGIN = 0.05  # how much faster than the default a challenger must be to be chosen
SAMPLE_ROWS = 256  # rows of the input timed: a long input's matmuls run at the speed they reach here
CPUINFO = Path("/proc/cpuinfo")
ROUNDS = 3  # timed calls per candidate (interleaved, the fastest counts), after one warm-up call each
MORE_ROUNDS = 6  # further rounds when the first ones leave the decision within 2 * MARGIN of flipping


# --------------------------------------------------------------------------------------------------
# The CPU
# --------------------------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (the first processor's, on every machine seen), or {} where
    it can't be read. The one reader of that file: flags, model name and generation all come from here."""
    fields: dict[str, str] = {}
    try:
        for line in CPUINFO.read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        return {}
    return fields


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, from /proc/cpuinfo or, failing that, from torch's capability string."""
    info = _cpuinfo()
    flags = info.get("flags", info.get("Features"))
    if flags is not None:
        return frozenset(flags.split())
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ...
    return frozenset({"AVX512": {"avx2", "avx512f"}, "AVX2": {"avx2"}}.get(capability, set()))


@functools.cache
def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


@functools.cache
def cpu_generation() -> str:
    """The CPU's family, model and stepping ("26/2/1"), or "" where /proc/cpuinfo does not say.

    The model name alone does not tell processors apart: a hypervisor may call a Zen 4 and a Zen 5 both "AMD EPYC",
    and their kernels' speeds differ by 2x. A home folder shared by the nodes of a cluster would then hand one
    generation's measured choices to the other.
    """
    info = _cpuinfo()
    fields = [info.get(name, "") for name in ("cpu family", "model", "stepping")]
    return "/".join(fields) if all(fields) else ""


def cpu_identity() -> str:
    """What the kernel choices are kept for: the model name, and the generation where the OS tells it."""
    generation = cpu_generation()
    return f"{cpu_model()} ({generation})" if generation else cpu_model()


def isa() -> list[str]:
    """The instruction sets that decide the kernels' speed, int8 exactness and an int8 model's bfloat16
    cross-attention, as bench reports them."""
    flags = cpu_flags()
    names = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16"]
    return [n for n in names if n in flags] + (["amx"] if {"amx_int8", "amx_tile"} & flags else [])


def has_native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 dot products in hardware (avx512_bf16, AMX), rather than by conversion."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def has_vnni() -> bool:
    """Whether int8 products are summed in int32 (VNNI, AMX), so that no pair of them can saturate."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"} & cpu_flags())


def int8_weight_levels() -> int:
    """The largest int8 weight magnitude that keeps oneDNN's int8 matmul exact on this CPU: 127, or 63."""
    forced = os.environ.get("BIGBIRD_INT8_SAFE", "")
    safe = forced == "1" if forced in ("0", "1") else not has_vnni()
    return 63 if safe else 127


# --------------------------------------------------------------------------------------------------
# Private ops, verified
# --------------------------------------------------------------------------------------------------
def private_op(name: str) -> Any:
    """The private op `name` ("linear", "linear-packed", "qlinear", "qlinear-fbgemm", "flash", "conv-packed",
    "conv-packed-bf16") if it works here, else None."""
    if os.environ.get("BIGBIRD_PRIVATE_OPS") == "0":
        return None
    return _verified(name)


@functools.cache
def _verified(name: str) -> Any:
    try:
        op, ok = _CHECKS[name]()
    except Exception as error:  # a missing op or a changed signature: any error means "don't use it"
        log.debug("torch's private op for %s fails here (%s); using the public path", name, error)
        return None
    if not ok:
        log.debug("torch's private op for %s gives wrong numbers here; using the public path", name)
        return None
    return op


def _check_linear(packed: bool = False) -> tuple[Any, bool]:
    op = torch.ops.mkldnn._linear_pointwise
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("no oneDNN in this torch build")
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(8, generator=g)
    with torch.inference_mode():
        weight = torch.ops.mkldnn._reorder_linear_weight(w, 5) if packed else w
        y = op(x, weight, b, "gelu", [], "tanh")
    return op, torch.allclose(y, F.gelu(F.linear(x, w, b), approximate="tanh"), atol=1e-4)


def _check_qlinear() -> tuple[Any, bool]:
    op = torch.ops.onednn.qlinear_pointwise
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 16), dtype=torch.uint8, generator=g)
    w = torch.randint(-63, 64, (8, 16), dtype=torch.int8, generator=g)
    scales, zero_points = torch.full((8,), 0.5), torch.zeros(8, dtype=torch.long)
    bias = torch.randn(8, generator=g)
    with torch.inference_mode():
        packed = torch.ops.onednn.qlinear_prepack(w, [5, 16])
        y = op(x, 0.25, 3, packed, scales, zero_points, bias, 1.0, 0, torch.float32, "relu", [], "")
    exact = ((x.double() - 3) @ w.double().T * 0.125 + bias.double()).relu()
    return op, torch.allclose(y.double(), exact, atol=1e-3)


def _check_qlinear_fbgemm() -> tuple[Any, bool]:
    """fbgemm's int8 linear that quantizes its float input with a given scale: given our int8 weights and scale it
    must give exact int8 arithmetic, like oneDNN's."""
    op = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-63, 64, (8, 16), dtype=torch.int8, generator=g)
    x = torch.randint(0, 256, (5, 16), generator=g).float() * 0.25 - 0.75  # on the grid of scale 0.25, zero point 3
    bias = torch.randn(8, generator=g)
    with torch.inference_mode():
        y = op(x, 0.25, 3, fbgemm_pack(w, torch.full((8,), 0.5), bias))
    exact = ((x.double() + 0.75) / 0.25 - 3) @ w.double().T * 0.125 + bias.double()
    return op, torch.allclose(y.double(), exact, atol=1e-3)


def fbgemm_pack(values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """int8 weights (one scale per output row) and a float bias packed for fbgemm's int8 linear."""
    zero_points = torch.zeros(len(scales), dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are marked deprecated; the check above notices removal
        weights = torch._make_per_channel_quantized_tensor(values, scales.double(), zero_points, 0)
    return torch.ops.quantized.linear_prepack(weights, bias)


def _check_conv_packed(dtype: torch.dtype = torch.float32) -> tuple[Any, bool]:
    """oneDNN's convolution on a weight packed in its layout, grouped, on a channels-last input: what
    cross_attention runs, in float32 or (an int8 model's) bfloat16, within that type's rounding of float32 on the
    same (rounded) inputs."""
    op = torch.ops.mkldnn._convolution_pointwise
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("no oneDNN in this torch build")
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise RuntimeError("oneDNN has no bfloat16 on this CPU")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 5, 1, generator=g).contiguous(memory_format=torch.channels_last).to(dtype)
    w = torch.randn(8, 3, 1, 1, generator=g).to(dtype)
    with torch.inference_mode():
        packed = torch.ops.mkldnn._reorder_convolution_weight(w, [0, 0], [1, 1], [1, 1], 2, [1, 6, 5, 1])
        y = op(x, packed, None, [0, 0], [1, 1], [1, 1], 2, "none", [], "")
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    expected = F.conv2d(x.float(), w.float(), groups=2)
    return op, y.dtype == dtype and torch.allclose(y.float(), expected, rtol=tolerance, atol=tolerance)


def _check_flash() -> tuple[Any, bool]:
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 8, generator=g) for _ in range(3))
    bias = torch.randn(1, 1, 1, 3, generator=g)
    with torch.inference_mode():
        out, lse = op(q, k, v, 0.0, False, attn_mask=bias)
    scores = q @ k.transpose(-1, -2) / 8**0.5 + bias
    ok = torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-5)
    return op, ok and torch.allclose(lse, scores.logsumexp(-1), atol=1e-5)


_CHECKS: dict[str, Callable[[], tuple[Any, bool]]] = {
    "linear": _check_linear,
    "linear-packed": functools.partial(_check_linear, packed=True),
    "qlinear": _check_qlinear,
    "qlinear-fbgemm": _check_qlinear_fbgemm,
    "flash": _check_flash,
    "conv-packed": _check_conv_packed,
    "conv-packed-bf16": functools.partial(_check_conv_packed, torch.bfloat16),
}


# --------------------------------------------------------------------------------------------------
# The matmul kernel, by measurement
# --------------------------------------------------------------------------------------------------
def cache_path() -> Path:
    """Where the choices are kept: $BIGBIRD_CACHE_DIR, else $XDG_CACHE_HOME/bigbird-cli, else ~/.cache/bigbird-cli."""
    root = os.environ.get("BIGBIRD_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "bigbird-cli"
    )
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{cpu_identity()}-torch-{torch.__version__}").strip("-")
    return Path(root) / f"kernels-{slug}.json"


_chosen: dict[str, str] = {}  # the choices this process runs, by shape key
_measured: dict[str, dict[str, float]] = {}  # the microbenchmark numbers this process took, by shape key


def shape_key(in_features: int, out_features: int, post_op: str, rows: int, kind: Kind = FLOAT32) -> str:
    """The choice holds for one kind of matmul, weight shape, fused activation and thread count, at few or many
    input rows."""
    size = "rows<=16" if rows <= 16 else "rows<=256" if rows <= 256 else "rows>256"
    return f"{kind.key_prefix}{in_features}x{out_features} {post_op} {size} threads={torch.get_num_threads()}"


def cross_attention_key(heads: int, head_dim: int, source_len: int, queries: int) -> str:
    """The choice holds for one head layout and thread count, at a source length up to a power of two, and few
    or many query rows per input."""
    source = 1 << max(0, source_len - 1).bit_length()
    size = "queries<=16" if queries <= 16 else "queries>16"
    prefix = CROSS_ATTENTION.key_prefix
    return f"{prefix}{heads}x{head_dim} source<={source} {size} threads={torch.get_num_threads()}"


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
        _measured[key] = measure(names, run, kind.default)
        choice = decide(_measured[key], kind.default)
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
        _warn_once(f"{kind.override}={value!r} names no {kind.name} kernel (auto, {', '.join(kind.candidates)}); "
                   "choosing by measurement.")  # fmt: skip
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

    The choice is kept for good, so a close call (a load spike on a shared machine can make it) gets
    `MORE_ROUNDS` more before it is decided: the fastest of more calls is nearer each kernel's unloaded speed.
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
    timings behind those it measured), the int8 weight range, and which private ops are in use."""

    def chosen(kind: Kind) -> dict[str, str]:
        return {key.removeprefix(kind.key_prefix): c for key, c in _chosen.items() if kind_of(key) is kind}

    return {
        "override": override(FLOAT32),
        "int8_override": override(INT8),
        "cross_attention_override": override(CROSS_ATTENTION),
        "float32": chosen(FLOAT32),
        "int8": chosen(INT8),
        "cross_attention": chosen(CROSS_ATTENTION),
        "measured_ms": {key: {n: round(s * 1e3, 3) for n, s in v.items()} for key, v in _measured.items()},
        "int8_weight_levels": int8_weight_levels(),
        "private_ops": [name for name in _CHECKS if private_op(name) is not None],
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
        data = {"cpu": cpu_identity(), "isa": isa(), "torch": torch.__version__, "choices": {}}
    data["choices"][key] = {"choice": choice, "ms": {n: round(s * 1e3, 3) for n, s in seconds.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f, indent=1)
        os.replace(f.name, path)
    except OSError as error:  # a read-only home still runs, it just measures again next time
        log.debug("could not write the kernel choices to %s: %s", path, error)
