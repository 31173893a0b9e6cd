"""Cross-attention of a decoder to its encoder's keys/values, which stay the same for a whole generate call.

Every decoding step reads all of them for a handful of queries (the beams): pegasus-large over 4096 source tokens
reads 32 MB a layer, 512 MB a step, to do a few multiply-adds per number read. That is a memory-bound
matrix-vector product, and torch's attention kernels run it through general matmul routines that on some CPUs
(MKL on AMD) reach a quarter of the memory's speed.

oneDNN's grouped 1x1 convolution is the same product, with one group per (input, head):

* scores: the keys of a head, (S, D) as they lie in memory head-major, are the weights of S output channels over
  D input channels; the queries are the input, one "pixel" per query row;
* context: the values of a head transposed, (D, S), are the weights of the second convolution, whose input is the
  softmax of the first one's output, as it comes out.

In the channels-last layout every tensor of the chain is already laid out as the next step reads it: the query
rows as the projection wrote them, scores with the source axis last (where the softmax runs), the context as the
heads merged (what the output projection reads). Both weights are repacked once per generate call into oneDNN's
own layout, *instead of* the plain tensors (the same memory), and then stream at memory speed.

Whether it beats torch's attention is measured per machine (`kernels.choose`, kind `CROSS_ATTENTION`), like the
linear layers' kernels; `BIGBIRD_CROSS_ATTENTION=sdpa|onednn` forces one.

A model whose projections run in int8 (`--quantize int8`) already trades exactness for speed, and there the keys and
values are packed in bfloat16 on CPUs that compute it natively (avx512_bf16, AMX): half the bytes for every step to
stream, and half the memory. Queries and probabilities enter the convolutions in bfloat16 too (oneDNN wants one
type), while the softmax runs in float32. A bfloat16 model's keys/values (`--dtype bfloat16`) take the same kernel
on such CPUs. Both are rules, not measurements: which kernel runs must never depend on a timing when it changes the
numbers. `BIGBIRD_CROSS_ATTENTION=sdpa|onednn` keeps torch's attention, or float32, there too.
"""

from __future__ import annotations

import math

import torch

from . import cpu, kernels, private_ops
from .attention import full_attention


class CrossKeysValues:
    """One layer's cross-attention keys/values, (inputs, heads, source, head_dim), and attention to them.

    Decoder rows may be a whole multiple g of the inputs (g beams per input): the g rows of an input are folded
    into the query axis, so the keys/values are held once per input.

    `reused` marks keys/values kept for many calls (a generate call's cache): only those are worth repacking, and
    their first call chooses the kernel by measurement. `approximate` marks those of a model that runs int8: they
    are packed in bfloat16 where the CPU computes it natively (see the module docstring).
    """

    def __init__(
        self, keys: torch.Tensor, values: torch.Tensor, reused: bool = False, approximate: bool = False
    ) -> None:
        self.inputs, self.heads, self.source_len, self.head_dim = keys.shape
        self.keys, self.values = keys, values  # packed: (groups*S, D, 1, 1) and the values (groups*D, S, 1, 1)
        self.reused = reused
        self.approximate = approximate
        self.packed = False
        self.packed_dtype = keys.dtype  # what the packed keys/values hold: the input's, or bfloat16
        self.plain_dtype = keys.dtype  # what they are read back as (plain)
        self._chosen = not reused  # only reused keys/values choose (and may pack) at their first call

    def attend(
        self, q: torch.Tensor, bias: torch.Tensor | None, dropout: float = 0.0, output_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax attention of (rows, heads, new, head_dim) queries over the keys/values of their inputs, with an
        additive (inputs, 1, 1 or new, source) bias; (rows, heads, new, head_dim) out, probabilities on request."""
        rows = q.shape[0]
        if rows % self.inputs:
            raise ValueError(f"{rows} decoder rows can't be split over {self.inputs} encoder rows")
        fast = self._fast_path_applies(q, bias, dropout, output_probs)
        if not self._chosen:
            self._chosen = True
            if fast and self._bfloat16_applies(q):
                self._pack(q.shape[0] // self.inputs * q.shape[2], torch.bfloat16)
            elif fast and q.dtype == torch.float32:  # bfloat16 queries pack by rule or not at all
                self._choose(q, bias)
        if self.packed and fast:
            return self._attend_packed(q, bias, self.keys, self.values), None
        return self._attend_plain(q, bias, dropout, output_probs)

    def plain(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values as (inputs, heads, source, head_dim) tensors (from the packed ones: to_dense is exact).

        Reused ones are made contiguous, head by head, once: every step reads them whole, and a head split out of
        the projection's (tokens, heads*dim) rows strides a page per key (pegasus-large, 4096 tokens: ~20% of a
        step's attention).
        """
        if not self.packed:
            if self.reused:
                self.keys, self.values = self.keys.contiguous(), self.values.contiguous()
            return self.keys, self.values
        shape = (self.inputs, self.heads, self.source_len, self.head_dim)
        values = self.values.to_dense().view(self.inputs, self.heads, self.head_dim, self.source_len)
        # Held in bfloat16 (an int8 or bfloat16 model's): read back in the model's type, so either path takes them.
        plain = self.plain_dtype
        return self.keys.to_dense().view(shape).to(plain), values.transpose(-1, -2).to(plain)

    # ----------------------------------------------------------------------------------------------
    def _fast_path_applies(
        self, q: torch.Tensor, bias: torch.Tensor | None, dropout: float, output_probs: bool
    ) -> bool:
        """Whether the packed kernel can run this call: inference on CPU float32 tensors, no probabilities, and a
        bias with one row per input (padding), the only kind cross-attention has."""
        tracked = torch.is_grad_enabled() and (q.requires_grad or self.keys.requires_grad)
        one_row = bias is None or (bias.shape[1] == 1 and bias.shape[2] == 1)
        return (
            self.reused
            and not tracked
            and not output_probs
            and dropout == 0.0
            and one_row
            and q.device.type == "cpu"
            and q.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.enabled
            and private_ops.private_op("conv-packed") is not None
        )

    def _bfloat16_applies(self, q: torch.Tensor) -> bool:
        """Whether these keys/values are packed in bfloat16: a bfloat16 model's (they are bfloat16 already) or an int8
        model's, on a CPU with native bfloat16 whose packed bfloat16 convolution works, unless the environment
        forces a float32 kernel. A bfloat16 model's is the rule, like an int8 model's, for it is not the numbers of
        torch's attention either: the scores are rounded to bfloat16 before the float32 softmax (torch keeps them in
        float32), and in exchange a step's cross-attention reads them at memory speed (pegasus-large, 4096 tokens,
        AMD EPYC 26/2/1: 34 of a 56 ms step in torch's)."""
        return (
            (q.dtype == torch.bfloat16 or (self.approximate and q.dtype == torch.float32))
            and cpu.has_native_bfloat16()
            and kernels.override(kernels.CROSS_ATTENTION) in ("auto", "onednn-bf16")
            and private_ops.private_op("conv-packed-bf16") is not None
        )

    def _pack(self, queries: int, dtype: torch.dtype, copies: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Hold the keys/values packed in `dtype` from now on (`copies` made already, or made now), instead of the
        plain ones, and say so to bench."""
        self.keys, self.values = copies or self._packed_copies(queries, keep_plain=False, dtype=dtype)
        self.packed, self.packed_dtype = True, dtype
        key = kernels.cross_attention_key(self.heads, self.head_dim, self.source_len, queries)
        if dtype == torch.bfloat16:  # by rule (an int8 or bfloat16 model's), beside float32 models' measured choice
            kernels.settled(f"{key} {'int8' if self.approximate else 'bfloat16'}-model", "onednn-bf16")

    def _choose(self, q: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Time torch's attention against the packed kernel on this call (once per machine and shape), and pack
        when the packed kernel wins."""
        queries = q.shape[0] // self.inputs * q.shape[2]
        trial: list[torch.Tensor] = []

        def run(name: str) -> torch.Tensor:
            if name == "sdpa":
                return self._attend_plain(q, bias)[0]
            if not trial:
                trial.extend(self._packed_copies(queries))
            return self._attend_packed(q, bias, *trial)

        key = kernels.cross_attention_key(self.heads, self.head_dim, self.source_len, queries)
        if kernels.choose(key, ["sdpa", "onednn"], run, kernels.CROSS_ATTENTION) == "onednn":
            self._pack(queries, self.keys.dtype, tuple(trial) if trial else None)

    def _packed_copies(
        self, queries: int, keep_plain: bool = True, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and the transposed values as oneDNN's packed weights of the two grouped 1x1 convolutions, in
        `dtype` (the plain ones' by default).

        Each comes out of the projection's layout in one copy (the keys' copy reads their strided view and converts
        in the same pass; the reorder reads the values' strided view in place, or their converted copy). Unless
        `keep_plain`, the plain keys are let go as soon as their copy is made, so that packing adds as little as
        it can to the first step's peak memory.
        """
        groups, s, d = self.inputs * self.heads, self.source_len, self.head_dim
        reorder = torch.ops.mkldnn._reorder_convolution_weight
        keys, values = self.keys, self.values
        dtype = dtype or keys.dtype
        if not keep_plain:
            del self.keys, self.values  # set again by the caller
        with torch.inference_mode():
            keys_oi = _in_type(keys, dtype).reshape(groups * s, d, 1, 1)
            del keys
            keys = reorder(keys_oi, [0, 0], [1, 1], [1, 1], groups, [1, groups * d, queries, 1])
            del keys_oi
            values_oi = _transposed(values, dtype).reshape(groups * d, s, 1, 1)
            del values
            values = reorder(values_oi, [0, 0], [1, 1], [1, 1], groups, [1, groups * s, queries, 1])
        return keys, values

    def _attend_plain(
        self, q: torch.Tensor, bias: torch.Tensor | None, dropout: float = 0.0, output_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """torch's attention, the g rows of an input folded into its query axis: (B*g, H, T, D) → (B, H, g*T, D)."""
        keys, values = self.plain()
        rows, h, new, d = q.shape
        inputs, group = self.inputs, rows // self.inputs
        folded = q.view(inputs, group, h, new, d).transpose(1, 2).reshape(inputs, h, group * new, d)
        context, probs = full_attention(folded, keys, values, bias, dropout, output_probs=output_probs)
        context = context.view(inputs, h, group, new, d).transpose(1, 2).reshape(rows, h, new, d)
        if probs is not None:
            probs = probs.view(inputs, h, group, new, -1).transpose(1, 2).reshape(rows, h, new, -1)
        return context, probs

    def _attend_packed(
        self, q: torch.Tensor, bias: torch.Tensor | None, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """The two grouped convolutions and the softmax between them, all in the channels-last layout (see the
        module docstring): query rows × (input, head, dim) channels → × (input, head, source) → × (input, head,
        dim)."""
        rows, h, new, d = q.shape
        inputs, s = self.inputs, self.source_len
        group = rows // inputs
        queries, groups = group * new, inputs * h
        conv = private_ops.private_op("conv-packed")
        dtype = self.packed_dtype  # the convolutions' type: the queries', or bfloat16 (an int8 model's)
        # (B*g, H, T, D) → (g*T, B, H*D), scaled as the softmax wants: one row per query, its input's channels.
        x = torch.empty(queries, inputs, h * d, dtype=q.dtype)
        torch.mul(q.transpose(1, 2).reshape(inputs, queries, h * d).transpose(0, 1), 1 / math.sqrt(d), out=x)
        scores = conv(_channels_last(x.to(dtype)), keys, None, [0, 0], [1, 1], [1, 1], groups, "none", [], "")
        scores = _rows(scores).view(queries, inputs, h, s)
        if bias is None:
            # In bfloat16 torch's softmax widens, computes in float32 and rounds once: one pass in and one out
            # where widening first takes two more (16 layers of 5 beams at 4096 source tokens: 1.8 ms a step).
            probs = scores.softmax(dim=-1)
        else:
            scores = scores.float()  # the padding's bias added, and the softmax run, in float32
            scores += bias.reshape(bias.shape[0], 1, s)  # (inputs or 1, 1, 1, S)
            probs = scores.softmax(dim=-1).to(dtype)
        context = conv(_channels_last(probs), values, None, [0, 0], [1, 1], [1, 1], groups, "none", [], "")
        context = _rows(context).view(group, new, inputs, h, d)
        return context.permute(2, 0, 3, 1, 4).reshape(rows, h, new, d).to(q.dtype)


def _in_type(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x itself in its own type; else converted into a contiguous tensor, in one pass over its (strided) view."""
    return x if x.dtype == dtype else x.new_empty(x.shape, dtype=dtype).copy_(x)


def _transposed(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(inputs, heads, S, D) values as a contiguous (inputs, heads, D, S) tensor in `dtype`.

    Values fresh from their projection are each input's (S, heads*D) matrix, and torch copies a transposed matrix
    in tiles, where the same transposition spelled in four dimensions goes element by element: pegasus-large,
    2,752 tokens, 1.7 against 9.0 ms a layer (AMD EPYC 26/2/1), 0.9 s of the first steps of 8 such documents.
    The type changes first, in a plain pass: a converting transposed copy takes the slow way again.
    """
    inputs, heads, s, d = values.shape
    rows = values.transpose(1, 2)  # (inputs, S, heads, D): contiguous when the values are a projection's
    if not rows.is_contiguous():
        return _in_type(values.transpose(-1, -2), dtype).contiguous()
    rows = _in_type(rows, dtype).view(inputs, s, heads * d)
    out = rows.new_empty(inputs, heads * d, s)
    for matrix, transposed in zip(rows, out, strict=True):
        transposed.copy_(matrix.t())
    return out.view(inputs, heads, d, s)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(rows, ...) → a (1, channels, rows, 1) view of it in channels-last layout: the rows are the pixels."""
    rows = x.shape[0]
    return x.reshape(1, rows, 1, -1).permute(0, 3, 1, 2)


def _rows(y: torch.Tensor) -> torch.Tensor:
    """A (1, channels, rows, 1) convolution output as (rows, channels): a view when it came out channels-last."""
    return y.permute(0, 2, 3, 1).reshape(y.shape[2], y.shape[1])
