"""What the CPU here has: its identity (model name and generation, for the kernel choices' cache) and its features.

/proc/cpuinfo is read once (torch's own capability string where that file is missing). On x86 CPUs without VNNI,
oneDNN's uint8 × int8 matmul adds pairs of products in int16 with saturation (`vpmaddubsw`): 255 × 127 × 2
overflows it. There `int8_weight_levels` keeps weights to 7 bits (±63), so that a pair stays within 255 × 64 × 2 <
2¹⁵ and the int8 result is exact. `BIGBIRD_INT8_SAFE=1` forces this on any CPU (the tests use it), `=0` forbids it.
No decision here depends on a measurement.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")


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
