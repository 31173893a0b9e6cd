"""The linear layer of every model here, with its activation fused in, and its int8 mode.

`Linear` keeps nn.Linear's parameters (`weight`, `bias`), so checkpoints map onto it unchanged. What it adds is
the choice of kernel at inference on the CPU:

* float32 runs whichever of torch's F.linear (MKL), oneDNN's matmul with the activation applied in the same
  pass, and oneDNN on weights packed in its own layout was fastest on this machine for the layer's shape
  (`kernels.choose` times them once per machine). MKL does not use AVX-512 on AMD processors, where oneDNN is
  about twice as fast; on some Intel CPUs MKL wins. Packed weights stream at memory speed on few-row inputs
  (decoder steps: about twice plain oneDNN's rate), so a layer that chooses them keeps its weight packed
  *instead of* plain: one copy, unpacked again where anything needs the plain tensor (see `Linear.pack`).
  A tied weight (an LM head's, which the embeddings read too) can't be replaced, so a tied layer that chooses
  packing keeps a packed copy beside it: pegasus-large's head is 394 MB, and packed it took 9.5 against 16 ms
  of a 5-beam step, 22.5 against 27.5 ms of 8 documents' (AMD EPYC 26/2/1).
  A bfloat16 model chooses among the same three, apart from float32's choices, on CPUs that compute bfloat16
  natively (avx512_bf16, AMX), where oneDNN's bfloat16 matmul runs at twice float32's rate and torch's F.linear
  does not always reach it. While gradients are tracked, or on other devices, it is plain F.linear.
* `quantize_int8` switches a layer to dynamic int8: weights quantized once per output channel, activations
  per call (one scale per tensor), through whichever of fbgemm's and oneDNN's int8 matmuls was fastest here for
  the shape (`kernels.choose` again; both get the same int8 values and scale, so the numbers don't depend on
  the choice). On CPUs without VNNI the weights keep to 7 bits, which keeps those kernels' int16 pair sums from
  saturating. The float weights stay for training, other devices and checkpoints, unless `keep_float=False`
  (what the CLI's tasks and bench ask: inference only): then the layer holds one byte per weight instead of
  four, plus its kernels' packings, and the float weight is a shape without memory (the meta device).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import backprop, cpu, kernels, private_ops
from .initialization import init_skipped

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
# The int8 kernels, by the private op (private_ops.private_op) each one runs.
INT8_OPS = {"fbgemm": "qlinear-fbgemm", "onednn": "qlinear"}
# What a layer quantized with keep_float=False says when asked for what only float weights can do.
INT8_ONLY = "this layer runs int8 only (quantize_int8 with keep_float=False dropped its float weights)"
# Rows of input oneDNN's int8 weight layout is chosen for (long inputs are where the time goes).
PACKING_ROWS = 1024
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


# Rows of one input while several inputs' rows run together (a batched decoding step: `rows_per_input`).
_ROWS_PER_INPUT: ContextVar[int | None] = ContextVar("rows_per_input", default=None)
# Whether a kernel gives every input's rows of a batch the bits they get alone, by (weight shape, activation, rows
# per input, kernel, dtype, threads, inputs): measured once per process (see `Linear._rows_exact`).
_EXACT: dict[tuple, bool] = {}
# How many inputs' rows a kernel runs at once, by the same key (see `Linear._exact_inputs`).
_RUNS: dict[tuple, int] = {}


@contextlib.contextmanager
def rows_per_input(rows: int) -> Iterator[None]:
    """Within it, a Linear's input holds consecutive inputs of `rows` rows each (a decoding step of several
    inputs' beams), and each input's rows come out as they would alone: see `Linear._per_input`."""
    token = _ROWS_PER_INPUT.set(rows)
    try:
        yield
    finally:
        _ROWS_PER_INPUT.reset(token)


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function a config names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclass
class Int8Weights:
    """A layer's int8 weights: one float scale per output row, and the weights packed for each int8 kernel the
    layer has run, at that kernel's first use. The int8 values are kept only until the first packing (most layers
    only ever run one kernel); another kernel's packing quantizes the float weights again, to the same values."""

    levels: int  # the largest weight magnitude: cpu.int8_weight_levels() when quantized
    scales: torch.Tensor
    zero_points: torch.Tensor  # all 0 (symmetric), in the form oneDNN's kernel takes them on every call
    bias: torch.Tensor | None
    values: torch.Tensor | None = None
    packed: dict[str, Any] = field(default_factory=dict)
    keep_values: bool = False  # the float weights are gone: a later kernel's packing reads these values


def _quantize_uint8(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """x as uint8 with one affine scale for the whole tensor (its range, widened to include 0).

    torch's quantizer does the rounding in one pass; its uint8 storage is then read in place rather than
    copied out by int_repr().
    """
    scale, zero_point = activation_scale(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized tensors are marked deprecated in favour of torchao
        q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    u8 = torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())
    return u8, scale, zero_point


def activation_scale(x: torch.Tensor) -> tuple[float, int]:
    """The uint8 scale and zero point of one tensor: its range, widened to include 0, over 0..255."""
    low, high = (float(v) for v in torch.aminmax(x))
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    return scale, min(255, max(0, round(-low / scale)))


def quantize_weights(weight: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weights in [-levels, levels], one float scale per output row (levels: 127, or 63 where
    the CPU's int8 kernel would saturate on full-range weights: see cpu.int8_weight_levels)."""
    scales = (weight.abs().amax(dim=1) / levels).clamp_min(1e-12)
    return torch.round(weight / scales[:, None]).clamp(-levels, levels).to(torch.int8), scales


def _float_kind(x: torch.Tensor, weight: torch.Tensor) -> kernels.Kind | None:
    """The kind of float matmul whose kernel is chosen by measurement (float32, or bfloat16 where the CPU computes
    it natively), or None for what runs as torch does it (mixed types, half precision)."""
    if x.dtype != weight.dtype:
        return None
    if x.dtype == torch.float32:
        return kernels.FLOAT32
    if x.dtype == torch.bfloat16 and cpu.has_native_bfloat16():
        return kernels.BFLOAT16
    return None


def _version(weight: torch.Tensor) -> int:
    """How many times `weight` was changed in place (-1 for an inference tensor, which keeps no count: it can only
    change inside inference mode)."""
    try:
        return weight._version
    except RuntimeError:
        return -1


@dataclass(frozen=True)
class _Stamp:
    """What a copy of a weight was made from: the tensor object, its memory, type and in-place version. A copy whose
    weight no longer matches is stale: the weight was replaced (a new Parameter, `param.data = ...`, a submodule's
    `.to()` that left the head out) or changed in place. Writes the version can't see (through `.data`, or to an
    inference tensor) need the layer's `unpack()`."""

    tensor: weakref.ref
    data_ptr: int
    dtype: torch.dtype
    version: int

    @classmethod
    def of(cls, weight: torch.Tensor) -> _Stamp:
        return cls(weakref.ref(weight), weight.data_ptr(), weight.dtype, _version(weight))

    def matches(self, weight: torch.Tensor) -> bool:
        now = (weight.data_ptr(), weight.dtype, _version(weight))
        return self.tensor() is weight and now == (self.data_ptr, self.dtype, self.version)


class Linear(nn.Linear):
    """nn.Linear followed by an optional activation (named as in the configs), computed by the fastest kernel
    that gives the same numbers: see the module docstring."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.activation = activation
        self.act = None if activation is None else activation_function(activation)
        # What oneDNN applies inside its matmul, and what is left to apply after it (an activation it lacks).
        self.post_op = ONEDNN_POST_OPS.get(activation, ("none", ""))
        self.act_after_kernel = self.act if self.post_op[0] == "none" else None
        self.int8: Int8Weights | None = None  # set by quantize_int8()
        # Set where the weight is another module's too (a tied LM head): packed, it keeps a copy beside it.
        self.shares_weight = False
        # Cleared while a training loop runs inference: every weight stays the Parameter its optimizer holds.
        self.may_pack = True
        # A tied layer's packed copy, and the stamp of the weight it copies (a change to the weight makes it stale).
        self._beside: tuple[torch.Tensor, _Stamp] | None = None
        self._trial: torch.Tensor | None = None  # a packed copy while the packed kernel is being timed
        self._weight_requires_grad = True  # what an unpacked weight gets back

    def reset_parameters(self) -> None:
        if not init_skipped():  # built to be loaded: see initialization.skipping_init
            super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight_grad = self._weight_requires_grad if self.packed else self.weight.requires_grad
        tracked = torch.is_grad_enabled() and (x.requires_grad or weight_grad)
        if not tracked and x.device.type == "cpu":
            group = _ROWS_PER_INPUT.get()
            if group is not None and x.numel() // x.shape[-1] > group:
                return self._per_input(x, group)
            if self.int8 is not None:
                return self._int8_forward(x)
            if _float_kind(x, self.weight) is not None:
                return self._float_forward(x)
        if self.weight.is_meta:
            raise RuntimeError(f"{INT8_ONLY}, so it can't track gradients or run on {x.device.type}")
        self.unpack()
        if tracked and backprop.applies(x, self.weight):
            y = backprop.linear(x, self.weight, self.bias)
            return y if self.act is None else self.act(y)
        return self._run("mkl", x)

    @property
    def packed(self) -> bool:
        """Whether the weight is held in oneDNN's packed layout (see `pack`)."""
        return self.weight.is_mkldnn

    def _float_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Through the kernel kernels.choose picks for this shape (timed on this input at the shape's first call)."""
        return self._run(self._float_kernel(x, x.numel() // x.shape[-1]), x)

    def _float_kernel(self, x: torch.Tensor, rows: int) -> str:
        """The float32 or bfloat16 kernel for inputs of `rows` rows, chosen (timed on x's first rows) at the
        shape's first call.

        A packed layer has only its packed weight, so it runs the packed kernel whatever its input.
        """
        if self.packed or self._copy_beside() is not None:
            return "onednn-packed"
        kind = _float_kind(x, self.weight)
        assert kind is not None
        suffix = "" if kind is kernels.FLOAT32 else "-bf16"
        names = ["mkl"]
        if private_ops.private_op("linear" + suffix) is not None and torch.backends.mkldnn.enabled:
            names.append("onednn")
            if private_ops.private_op("linear-packed" + suffix) is not None and self.may_pack:
                names.append("onednn-packed")
        key = kernels.shape_key(self.in_features, self.out_features, self.post_op[0], rows, kind)
        sample = x.flatten(0, -2)[: min(rows, kernels.SAMPLE_ROWS)]
        kernel = kernels.choose(key, names, lambda name: self._run(name, sample), kind)
        if kernel == "onednn-packed":
            self.pack(rows)
        self._trial = None  # timed but not chosen: don't keep a second copy of the weight
        return kernel

    def _per_input(self, x: torch.Tensor, group: int) -> torch.Tensor:
        """The rows of several inputs, `group` consecutive rows each, with every input's rows bit for bit what
        they would be alone, so that decoding inputs together never changes a token.

        The kernel is the one an input alone gets (chosen for `group` rows). It runs over as many inputs' rows at
        once as it was seen to give each input's rows the bits they get alone (`_exact_inputs`), streaming the
        weight once per call rather than once per input: all of them where it can, else in runs of fewer (BLAS
        libraries change their code path above some number of rows: 15 for MKL's float32 sgemm and 30 for
        oneDNN's bfloat16 matmul here, Intel Xeon 6/167), else input by input. int8 always runs input by input:
        its activations are quantized with one scale per call, which would tie an input's numbers to the others'.
        """
        flat = x.reshape(-1, x.shape[-1])
        inputs = flat.shape[0] // group
        if self.int8 is not None:
            return torch.cat([self._int8_forward(part) for part in flat.split(group)]).view(*x.shape[:-1], -1)
        kernel = self._float_kernel(flat[:group], group) if _float_kind(x, self.weight) is not None else "mkl"
        run = self._exact_inputs(kernel, x.dtype, group, inputs)
        if run == inputs:
            y = self._run(kernel, flat)
        else:
            y = torch.cat([self._run(kernel, part) for part in flat.split(run * group)])
        return y.view(*x.shape[:-1], -1)

    def _exact_inputs(self, kernel: str, dtype: torch.dtype, group: int, inputs: int) -> int:
        """The most inputs of `inputs` whose rows `kernel` can run together, in runs of that many and a shorter last
        one, with every run seen to keep each input's bits (`_rows_exact`); 1 where none can."""
        key = (*self._exact_key(kernel, dtype, group), inputs)
        if key not in _RUNS:
            _RUNS[key] = next(
                (
                    run
                    for run in range(inputs, 1, -1)
                    if self._rows_exact(kernel, dtype, group, run)
                    and (inputs % run < 2 or self._rows_exact(kernel, dtype, group, inputs % run))
                ),
                1,
            )
        return _RUNS[key]

    def _exact_key(self, kernel: str, dtype: torch.dtype, group: int) -> tuple:
        """What a kernel's exactness over several inputs may depend on: shapes, activation, type and threads."""
        return (self.in_features, self.out_features, self.post_op, group, kernel, dtype, torch.get_num_threads())

    def _rows_exact(self, kernel: str, dtype: torch.dtype, group: int, inputs: int) -> bool:
        """Whether `kernel` gives `inputs` inputs of `group` rows, run together, the bits each gets alone.

        No library promises it: MKL's sgemm, and oneDNN's on a single row, sum in another order when there are
        more rows. BLAS libraries pick their code path by shape, never by value, so one trial on random rows
        per shape, kernel and count of inputs settles it for this process.
        """
        key = (*self._exact_key(kernel, dtype, group), inputs)
        if key not in _EXACT:
            probe = torch.randn(group * inputs, self.in_features, generator=torch.Generator().manual_seed(0))
            probe = probe.to(dtype)
            together = self._run(kernel, probe)
            _EXACT[key] = all(
                torch.equal(self._run(kernel, part.clone()), together[i * group : (i + 1) * group])
                for i, part in enumerate(probe.split(group))
            )
        return _EXACT[key]

    def _run(self, kernel: str, x: torch.Tensor) -> torch.Tensor:
        """One float matmul + activation through `kernel` ("mkl": torch's F.linear; "onednn", "onednn-packed")."""
        if kernel == "mkl":
            y = F.linear(x, self.weight, self.bias)
            return y if self.act is None else self.act(y)
        weight = self.weight
        if kernel == "onednn-packed" and not self.packed:  # a tied layer's copy, or a trial's while being timed
            weight = self._copy_beside()
            if weight is None:
                if self._trial is None:
                    self._trial = self._packed_copy(x.numel() // x.shape[-1])
                weight = self._trial
        attr, algorithm = self.post_op
        return self._after_kernel(private_ops.private_op("linear")(x, weight, self.bias, attr, [], algorithm))

    def _packed_copy(self, rows: int) -> torch.Tensor:
        """The weight in oneDNN's layout for inputs of about `rows` rows (any number of rows runs on it)."""
        with torch.inference_mode():
            return torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), max(1, min(rows, kernels.SAMPLE_ROWS)))

    def pack(self, rows: int = 1) -> None:
        """Hold the weight only in oneDNN's packed layout, for inputs of about `rows` rows.

        The plain weight is dropped, so the layer costs no more memory than before. Whatever needs the plain
        tensor gets it back first: training mode, a tracked forward, `.to()`, loading weights, `quantize_int8`
        and copies unpack; `state_dict` writes a plain copy. Code that reads `layer.weight` directly on a packed
        layer should call `unpack()` first.

        A tied weight stays where it is, and the packed copy is kept beside it (the one second copy of a weight
        in the model), until the layer unpacks or the weight is replaced or changed in place (`_Stamp`); code that
        writes a tied weight through `.data` should call `unpack()`.
        """
        if self.packed or self._copy_beside() is not None:
            return
        packed = self._trial if self._trial is not None else self._packed_copy(rows)
        self._trial = None
        if self.shares_weight:
            self._beside = packed, _Stamp.of(self.weight)
            return
        self._weight_requires_grad = self.weight.requires_grad
        self.weight = nn.Parameter(packed, requires_grad=False)

    def unpack(self) -> None:
        """Hold the weight as a plain tensor again, and only that (undoes `pack`)."""
        self._beside = None
        if self.packed:
            self.weight = self._plain_weight()

    def _copy_beside(self) -> torch.Tensor | None:
        """A tied layer's packed copy, while the weight is as it was copied; a stale one is let go."""
        beside = self._beside  # read once: another thread may let it go meanwhile
        if beside is None:
            return None
        if not beside[1].matches(self.weight):
            self._beside = None
            return None
        return beside[0]

    def _plain_weight(self) -> nn.Parameter:
        """A packed weight in the plain layout again, as the Parameter it was (to_dense is exact)."""
        return nn.Parameter(self.weight.to_dense(), requires_grad=self._weight_requires_grad)

    def train(self, mode: bool = True) -> Linear:
        if mode:
            self.unpack()  # before an optimizer collects the parameters
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Linear:
        self.unpack()  # .to(), .half(), .cuda() and the like convert plain tensors
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        if self.weight.is_meta:
            raise RuntimeError(f"{INT8_ONLY}, so it can't be saved: save the float32 model it came from")
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.packed:  # checkpoints and other tools read the plain layout
            destination[prefix + "weight"] = self.weight.to_dense()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        self.unpack()
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _int8_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Through the int8 kernel kernels.choose picks for this shape (timed on this input at its first call)."""
        rows = x.reshape(-1, x.shape[-1]).float()
        names = [name for name, op in INT8_OPS.items() if private_ops.private_op(op) is not None]
        key = kernels.shape_key(self.in_features, self.out_features, self.post_op[0], len(rows), kernels.INT8)
        sample = rows[: kernels.SAMPLE_ROWS]
        kernel = kernels.choose(key, names, lambda name: self._run_int8(name, sample), kernels.INT8)
        return self._run_int8(kernel, rows).view(*x.shape[:-1], -1).to(x.dtype)

    def _run_int8(self, kernel: str, x: torch.Tensor) -> torch.Tensor:
        """One int8 matmul + activation of (rows, in) float input through `kernel` ("fbgemm" or "onednn"): the
        input quantized to uint8 with one scale for the tensor, the result in float32."""
        w = self.int8
        assert w is not None
        packed = w.packed.get(kernel)
        if packed is None:
            packed = w.packed[kernel] = self._pack_int8(kernel)
        if kernel == "fbgemm":
            y = private_ops.private_op("qlinear-fbgemm")(x, *activation_scale(x), packed)
            return y if self.act is None else self.act(y)
        u8, scale, zero_point = _quantize_uint8(x)
        attr, algorithm = self.post_op
        y = private_ops.private_op("qlinear")(
            u8, scale, zero_point, packed, w.scales, w.zero_points, w.bias, 1.0, 0, torch.float32, attr, [], algorithm
        )
        return self._after_kernel(y)

    def _pack_int8(self, kernel: str) -> Any:
        w = self.int8
        assert w is not None
        values = w.values
        if not w.keep_values:
            w.values = None  # most layers only ever run one kernel
        if values is None:
            values, _ = quantize_weights(self.weight.detach().float().cpu(), w.levels)
        if kernel == "fbgemm":
            return private_ops.fbgemm_pack(values, w.scales, w.bias)
        # The input shape is a hint for oneDNN's weight layout; any number of rows works with it.
        return torch.ops.onednn.qlinear_prepack(values, [PACKING_ROWS, self.in_features])

    def _after_kernel(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.act_after_kernel is None else self.act_after_kernel(y)

    def quantize_int8(self, keep_float: bool = True) -> None:
        """Quantize the weights to int8 (symmetric, one scale per output channel) for dynamic int8 inference.

        With `keep_float` the float weights stay: training, other devices and checkpoints keep using them.
        Without, the weight becomes a meta tensor of its shape and the int8 values are kept instead (a quarter of
        the memory); the layer then runs int8 on the CPU only, and refuses the rest in one sentence.
        """
        if self.weight.is_meta:
            return  # already int8, without float weights to quantize again
        if not any(private_ops.private_op(op) is not None for op in INT8_OPS.values()):
            raise RuntimeError("this torch build has no working int8 kernel, so --quantize int8 can't run here")
        self.unpack()
        levels = cpu.int8_weight_levels()
        values, scales = quantize_weights(self.weight.detach().float().cpu(), levels)
        bias = None if self.bias is None else self.bias.detach().float().cpu()
        zero_points = torch.zeros(len(scales), dtype=torch.long)
        self.int8 = Int8Weights(levels, scales, zero_points, bias, values, keep_values=not keep_float)
        if not keep_float:
            self._weight_requires_grad = False
            self.weight = nn.Parameter(torch.empty(self.weight.shape, device="meta"), requires_grad=False)

    def __getstate__(self) -> dict:
        """Copies and pickles get plain weights and leave the kernels' packed ones out (opaque objects; packed
        again on demand)."""
        int8 = self.int8 and dataclasses.replace(self.int8, packed={})
        parameters = dict(self._parameters)
        if self.packed:
            parameters["weight"] = self._plain_weight()
        return {**self.__dict__, "_parameters": parameters, "_trial": None, "_beside": None, "int8": int8}

    def extra_repr(self) -> str:
        extra = f", activation={self.activation}" if self.activation else ""
        extra += ", int8" if self.int8 is not None else ""
        extra += ", packed" if self.packed else ", packed copy beside" if self._beside is not None else ""
        return super().extra_repr() + extra


def quantize_int8(model: nn.Module, inplace: bool = False, keep_float: bool = True) -> nn.Module:
    """`model` (or, unless `inplace`, a copy of it) with its linear layers running dynamic int8 on the CPU.

    Only this toolkit's `Linear` layers are quantized; a model without any (torch's own nn.Linear) is refused
    rather than handed back unchanged, which would look like int8 and run float32. `keep_float=False` drops
    their float weights for an inference-only model (see `Linear.quantize_int8`): pegasus-large holds 1.9 GB
    less."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_int8 takes a model (torch.nn.Module), not {type(model).__name__}")
    if not any(isinstance(module, Linear) for module in model.modules()):
        raise ValueError(f"{type(model).__name__} has no core Linear layer to quantize (torch's nn.Linear is not one)")
    quantized = model if inplace else copy.deepcopy(model)
    for module in quantized.modules():
        if isinstance(module, Linear):
            module.quantize_int8(keep_float)
    return quantized.eval()
