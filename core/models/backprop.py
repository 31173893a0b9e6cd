"""The float32 matmuls of a training step on the CPU, forward and both gradients, through the kernel measured
fastest here for each shape.

Tracked by autograd, a layer's `F.linear` runs MKL's sgemm three times a step: the forward, the input's gradient
and the weight's. On AMD CPUs MKL takes its AVX2 path, where oneDNN's matmul runs AVX-512 at about twice the
speed; on some Intel CPUs MKL wins. `linear` here computes x @ W.T + b with a gradient of its own whose three
matmuls each go through `kernels.choose` (kind `kernels.TRAINING`: torch's matmul or oneDNN's, timed once per
machine and shape), so a training step gets the speed inference gets. The numbers are float32 matmuls either way;
the kernels differ only in the order they add products in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels, private_ops


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear` serves this call: float32 on the CPU, outside autocast (which casts inside F.linear)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias, differentiable in all three, each matmul through this machine's faster kernel."""
    return _Linear.apply(x, weight, bias)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        flat = x.reshape(-1, x.shape[-1])
        y = matmul_t(flat, weight, "forward")
        if bias is not None:
            y += bias
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul_t(g, weight.t(), "input-grad").view(x.shape)  # g @ W
        if ctx.needs_input_grad[1]:
            grad_weight = matmul_t(g.t(), x.reshape(-1, x.shape[-1]).t(), "weight-grad")  # g.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = g.sum(0)
        return grad_x, grad_weight, grad_bias


def matmul_t(a: torch.Tensor, b: torch.Tensor, role: str) -> torch.Tensor:
    """a @ b.T for 2-d a (m, k) and b (n, k), either possibly a transposed view, through the kernel chosen for
    this role, shape and layout."""
    names = ["mkl"]
    if private_ops.private_op("linear") is not None and torch.backends.mkldnn.enabled:
        names.append("onednn")
    key = _key(a, b, role)
    return _run(kernels.choose(key, names, lambda name: _run(name, a, b), kernels.TRAINING), a, b)


def _run(kernel: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if kernel == "mkl":  # BLAS reads transposed views as they are
        return F.linear(a, b)
    # oneDNN's linear wants its operands laid out plainly: a transposed view is copied first (the timing counts it).
    return private_ops.private_op("linear")(a.contiguous(), b.contiguous(), None, "none", [], "")


def _key(a: torch.Tensor, b: torch.Tensor, role: str) -> str:
    """One choice per role, layout and shape; the dimension that counts tokens (it varies from batch to batch) to
    the next power of two."""
    m, k = a.shape
    n = b.shape[0]
    if role == "weight-grad":  # k counts tokens
        k = kernels.power_of_two_above(k)
    else:  # m counts tokens
        m = kernels.power_of_two_above(m)
    prefix = kernels.TRAINING.key_prefix
    return f"{prefix}{role} {m}x{k}x{n} threads={torch.get_num_threads()}"
