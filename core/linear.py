"""The linear layer of every model here, with its activation fused in, and its int8 mode.

`Linear` keeps nn.Linear's parameters (`weight`, `bias`), so checkpoints map onto it unchanged. What it adds is
the choice of kernel at inference on the CPU:

* float32 runs oneDNN's matmul, with the activation applied in the same pass. torch's own float32 CPU matmul
  goes through MKL, which does not use AVX-512 on AMD processors; oneDNN does, and is about twice as fast there
  (`bigbird bench` measures it). While gradients are tracked, or on other devices, it is plain F.linear.
* `quantize_int8` switches a layer to dynamic int8: weights quantized once per output channel, activations per
  call, through torch's quantized linear kernels (oneDNN's where torch has them).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "selu": F.selu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}
# The activations oneDNN can apply inside its matmul, as (attr, algorithm) of its fused linear op.
ONEDNN_POST_OPS: dict[str | None, tuple[str, str]] = {
    None: ("none", ""),
    "gelu": ("gelu", "none"),
    "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "gelu_fast": ("gelu", "tanh"),
    "relu": ("relu", ""),
    "silu": ("swish", ""),
    "swish": ("swish", ""),
    "tanh": ("tanh", ""),
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function a config names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@functools.cache
def _onednn_linear() -> Any:
    """oneDNN's fused linear op, or None where this torch build lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


class Linear(nn.Linear):
    """nn.Linear followed by an optional activation (named as in the configs), computed by the fastest kernel
    that gives the same numbers: see the module docstring."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.activation = activation
        self.act = None if activation is None else globals()["activation"](activation)
        self.int8: Any = None  # packed int8 weights once quantize_int8() has run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tracked = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if not tracked and x.device.type == "cpu":
            if self.int8 is not None:
                return self._activate(torch.ops.quantized.linear_dynamic(x.float(), *self.int8).to(x.dtype))
            fused = _onednn_linear()
            if fused is not None and x.dtype == torch.float32 and torch.backends.mkldnn.enabled:
                attr, algorithm = ONEDNN_POST_OPS.get(self.activation, ("none", ""))
                y = fused(x, self.weight, self.bias, attr, [], algorithm)
                return y if attr != "none" or self.act is None else self.act(y)
        return self._activate(F.linear(x, self.weight, self.bias))

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.act is None else self.act(y)

    def quantize_int8(self) -> None:
        """Quantize the weights to int8 (symmetric, one scale per output channel) for dynamic int8 inference.

        The float weights stay: training, other devices and checkpoints keep using them.
        """
        weight = self.weight.detach().float().cpu()
        scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        bias = None if self.bias is None else self.bias.detach().float().cpu()
        engine = "onednn" if "onednn" in torch.backends.quantized.supported_engines else None
        with warnings.catch_warnings(), _quantized_engine(engine):
            # torch marks its quantized tensor API deprecated in favour of torchao, which is not a dependency here.
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(qweight, bias)
        # fbgemm's kernels need activations in 7 bits on CPUs without VNNI; oneDNN's take all 8.
        reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86") and engine is None
        self.int8 = (packed, reduce_range)

    def extra_repr(self) -> str:
        extra = f", activation={self.activation}" if self.activation else ""
        return super().extra_repr() + extra + (", int8" if self.int8 is not None else "")


@contextlib.contextmanager
def _quantized_engine(engine: str | None) -> Iterator[None]:
    """Pack with `engine` (packed weights remember their engine), then restore the process-wide choice."""
    before = torch.backends.quantized.engine
    if engine is not None:
        torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """`model` (or, unless `inplace`, a copy of it) with its linear layers running dynamic int8 on the CPU."""
    quantized = model if inplace else copy.deepcopy(model)
    for module in quantized.modules():
        if isinstance(module, Linear):
            module.quantize_int8()
    return quantized.eval()
