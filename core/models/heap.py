"""The process's heap under glibc: handing free pages back to the OS, and keeping them for reuse.

No torch here, so that the CLI can set the heap up at start without paying for torch's import (shell completion
runs the program on every TAB).
"""

from __future__ import annotations

import ctypes
import functools
import os


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_heap() -> None:
    """glibc's malloc_trim: hand the heap's free pages back to the OS (a no-op elsewhere).

    Freed blocks under the mmap threshold stay resident in glibc's free lists, and a later block of a slightly
    different size (oneDNN's packed tensors are) does not fit their holes: it adds fresh pages on top of them.
    generate calls this between the encoder, whose scratch is freed by then, and the decoder's first step, which
    allocates the long-lived cross-attention keys/values (pegasus-large, 4096 tokens: 200 MiB off the peak).
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# glibc's mallopt parameters (malloc.h), and the values reuse_freed_memory pins them at.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
MMAP_THRESHOLD = 32 * 2**20  # where glibc's own sliding threshold stops rising on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20
# Set by the user, these say how they want glibc's heap to behave; reuse_freed_memory then leaves it alone.
MALLOC_ENVIRONMENT = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
)


def _tunable_libc() -> ctypes.CDLL | None:
    """glibc, where its heap is ours to tune: None where the allocator is not glibc's (no mallopt) or where the
    user's environment already tunes it."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt") or any(name in os.environ for name in MALLOC_ENVIRONMENT):
        return None
    return libc


def reuse_freed_memory() -> bool:
    """Keep freed blocks for reuse in this process rather than hand their pages back to the OS after each layer.

    glibc starts with a low mmap threshold that it raises as large blocks are freed, and trims the top of its heap
    whenever more than twice that is free there. A long input's activations (16 MB each for 4096 tokens) are freed
    and allocated again on every layer, so the heap keeps being trimmed and regrown: every new page costs a fault
    (1-3 us on a virtual machine), 35k-117k of them per roberta-base forward at 4096 tokens, more in int8 mode,
    whose quantized copies add allocations. Pinned at the values the heuristic reaches anyway (blocks up to 32 MiB
    from the heap) and a trim only past 256 MiB free, a forward pass faults once per page it needs and then
    reuses them. `release_free_heap` still hands everything free back where a caller asks (generate does, between
    the encoder and the first decoding step).

    Process-wide, so the programs call it (the CLI at start, each Ray worker), not the library on import. Does
    nothing where the allocator is not glibc's or where the user's environment already tunes it; returns whether
    it changed anything.
    """
    libc = _tunable_libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def reuse_large_blocks() -> bool:
    """Serve blocks of any size from the heap, so that those over the 32 MiB mmap threshold are reused too.

    glibc maps every block over its threshold afresh and unmaps it on free, and it will not set the threshold
    higher than 32 MiB. A training step at 4096 tokens allocates such blocks by the dozen (float32 attention scores
    of roberta-base: 61 MiB; the gradient of the embeddings: 148 MiB), each one faulted in, page by zeroed page,
    every step: bigbird-roberta-base's float32 step took 10.9-15 s with 1.0-3.2 million faults (2.6-7.5 s of it in
    the kernel) and 9.6-10.1 s with 0.1-0.2 million, at the same peak (7.6 against 7.8 GiB; AMD EPYC 26/2/1).
    Inference allocates few such blocks and was not faster for it, so only training processes call this (the
    finetune command, each Ray Train worker, bench's training step), after `reuse_freed_memory`; where memory
    is what matters, `release_free_heap` still hands free pages back (gradient checkpointing does, per layer).
    Does nothing where the allocator is not glibc's or the user's environment tunes it; returns whether it did.
    """
    libc = _tunable_libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0))
