"""Which of torch's private ops work here: `_linear_pointwise`, `qlinear_pointwise`, the packed
`_convolution_pointwise` and the flash attention that returns its log-sum-exp are not public API.

Each is called once on a tiny input and compared with the public path; a missing op, a changed signature or wrong
numbers turn it off with a debug log line. `BIGBIRD_PRIVATE_OPS=0` turns them all off (the public path
everywhere).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def private_op(name: str) -> Any:
    """The private op `name` ("linear", "linear-packed", "linear-bf16", "linear-packed-bf16", "qlinear",
    "qlinear-fbgemm", "flash", "conv-packed", "conv-packed-bf16") if it works here, else None."""
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


def _check_linear(packed: bool = False, dtype: torch.dtype = torch.float32) -> tuple[Any, bool]:
    op = torch.ops.mkldnn._linear_pointwise
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("no oneDNN in this torch build")
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=g).to(dtype) for shape in ((5, 16), (8, 16), (8,)))
    with torch.inference_mode():
        weight = torch.ops.mkldnn._reorder_linear_weight(w, 5) if packed else w
        y = op(x, weight, b, "gelu", [], "tanh")
    expected = F.gelu(F.linear(x.float(), w.float(), b.float()), approximate="tanh")
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2  # bfloat16's output keeps 8 bits of mantissa
    return op, y.dtype == dtype and torch.allclose(y.float(), expected, rtol=tolerance, atol=tolerance)


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
    "linear-bf16": functools.partial(_check_linear, dtype=torch.bfloat16),
    "linear-packed-bf16": functools.partial(_check_linear, packed=True, dtype=torch.bfloat16),
    "qlinear": _check_qlinear,
    "qlinear-fbgemm": _check_qlinear_fbgemm,
    "flash": _check_flash,
    "conv-packed": _check_conv_packed,
    "conv-packed-bf16": functools.partial(_check_conv_packed, torch.bfloat16),
}
NAMES = tuple(_CHECKS)  # every private op checked, by its name
