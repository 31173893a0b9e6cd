"""bigbird.models.cross_attention: attention to a decoder's fixed keys/values, on torch's kernel and on oneDNN's
packed grouped convolutions, against a dense float64 oracle; when it packs, what it keeps, and the choice by
measurement. Generation on packed keys/values is compared with transformers in test_generation.py."""

from __future__ import annotations

import math

import pytest
import torch

from bigbird.models import cpu, kernels, private_ops
from bigbird.models.cross_attention import CrossKeysValues, _transposed

HEADS, SOURCE, DIM = 4, 37, 8
LOWEST = torch.finfo(torch.float32).min
needs_conv = pytest.mark.skipif(
    private_ops.private_op("conv-packed") is None, reason="this torch build has no working packed oneDNN convolution"
)


def projected(inputs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values as the attention modules hand them over: head views of (inputs, source, heads*dim) rows."""
    g = torch.Generator().manual_seed(seed)
    k, v = (torch.randn(inputs, SOURCE, HEADS * DIM, generator=g) for _ in range(2))
    return k.unflatten(-1, (HEADS, DIM)).transpose(1, 2), v.unflatten(-1, (HEADS, DIM)).transpose(1, 2)


def padding_bias(inputs: int, kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "shared":  # one row of bias for every input
        bias = torch.zeros(1, 1, 1, SOURCE)
        bias[..., :3] = -2.0
        return bias
    bias = torch.zeros(inputs, 1, 1, SOURCE)
    for row in range(inputs):
        bias[row, ..., SOURCE - 5 * row :] = LOWEST  # input 0 unpadded, the others padded more and more
    return bias


def oracle(q, k, v, bias) -> tuple[torch.Tensor, torch.Tensor]:
    """Every decoder row against its own input's keys/values, in float64."""
    group = q.shape[0] // k.shape[0]
    k, v = (t.double().repeat_interleave(group, 0) for t in (k, v))
    scores = q.double() @ k.transpose(-1, -2) / math.sqrt(DIM)
    if bias is not None:
        scores = scores + bias.double().expand(k.shape[0] // group, -1, -1, -1).repeat_interleave(group, 0)
    probs = scores.softmax(-1)
    return probs @ v, probs


@pytest.mark.parametrize("kernel", ["sdpa", "onednn"])
@pytest.mark.parametrize(("inputs", "group", "new"), [(1, 1, 1), (1, 5, 1), (3, 2, 1), (2, 1, 3)])
@pytest.mark.parametrize("bias_kind", ["none", "padding", "shared"])
def test_attention_matches_the_dense_oracle(kernel, inputs, group, new, bias_kind, monkeypatch):
    """g decoder rows per input (beams) and several new tokens, through either kernel, at every step."""
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", kernel)
    k, v = projected(inputs, seed=inputs + group)
    bias = padding_bias(inputs, bias_kind)
    kept = CrossKeysValues(k, v, reused=True)
    for step in range(3):
        q = torch.randn(inputs * group, HEADS, new, DIM, generator=torch.Generator().manual_seed(step))
        expected, _ = oracle(q, k, v, bias)
        with torch.inference_mode():
            context, probs = kept.attend(q, bias)
        assert probs is None and context.shape == expected.shape
        assert (context.double() - expected).abs().max() < 1e-5
    assert kept.packed == (kernel == "onednn" and private_ops.private_op("conv-packed") is not None)


@needs_conv
def test_packed_keys_values_still_give_probabilities_and_the_plain_tensors(monkeypatch):
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "onednn")
    k, v = projected(2, seed=1)
    bias = padding_bias(2, "padding")
    q = torch.randn(6, HEADS, 1, DIM)
    kept = CrossKeysValues(k, v, reused=True)
    with torch.inference_mode():
        kept.attend(q, bias)
        assert kept.packed and kept.keys.is_mkldnn and kept.values.is_mkldnn
        context, probs = kept.attend(q, bias, output_probs=True)  # the spelled-out path, on the plain tensors
    expected, expected_probs = oracle(q, k, v, bias)
    assert (context.double() - expected).abs().max() < 1e-5
    assert (probs.double() - expected_probs).abs().max() < 1e-6
    plain_k, plain_v = kept.plain()
    assert torch.equal(plain_k, k) and torch.equal(plain_v, v)  # to_dense gives back exactly what was packed


@pytest.mark.parametrize("layout", ["projected", "head-major"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_are_transposed_exactly_from_either_layout(layout, dtype):
    """Packing transposes the values by a matrix per input where they come from a projection, and element by
    element from any other layout: the same tensor either way, in the packed type."""
    _, v = projected(3, seed=4)
    if layout == "head-major":
        v = v.contiguous()
    out = _transposed(v, dtype)
    assert out.dtype == dtype and out.is_contiguous()
    assert torch.equal(out, v.transpose(-1, -2).to(dtype))


@pytest.mark.parametrize("why", ["not reused", "gradient", "probabilities", "dropout", "private ops off"])
def test_what_never_packs(why, monkeypatch):
    """One-off keys/values, training and probabilities stay on torch's path (and give its numbers)."""
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "onednn")
    if why == "private ops off":
        monkeypatch.setenv("BIGBIRD_PRIVATE_OPS", "0")
    k, v = projected(1, seed=2)
    q = torch.randn(3, HEADS, 1, DIM, requires_grad=why == "gradient")
    kept = CrossKeysValues(k, v, reused=why != "not reused")
    dropout = 0.5 if why == "dropout" else 0.0
    with torch.set_grad_enabled(why == "gradient"):
        context, probs = kept.attend(q, None, dropout=dropout, output_probs=why == "probabilities")
    assert not kept.packed
    if why == "gradient":
        context.sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()
    if why != "dropout":
        assert (context.double() - oracle(q.detach(), k, v, None)[0]).abs().max() < 1e-5


def test_rows_must_split_over_the_inputs():
    k, v = projected(2, seed=3)
    with pytest.raises(ValueError, match="3 decoder rows can't be split over 2 encoder rows"):
        CrossKeysValues(k, v).attend(torch.randn(3, HEADS, 1, DIM), None)


@needs_conv
def test_auto_measures_once_per_shape_and_follows_the_choice(fresh_choices):
    """Under `auto` the first reused keys/values time both kernels; the next ones of the same shape read the choice."""
    k, v = projected(1, seed=4)
    q = torch.randn(5, HEADS, 1, DIM)
    first, second = CrossKeysValues(k, v, reused=True), CrossKeysValues(k.clone(), v.clone(), reused=True)
    with torch.inference_mode():
        first.attend(q, None)
        second.attend(q, None)
    key = kernels.cross_attention_key(HEADS, DIM, SOURCE, 5)
    chosen = kernels.summary()["cross_attention"]
    short = key.removeprefix("cross-attention ")
    assert list(chosen) == [short]
    assert set(kernels.summary()["measured_ms"][key]) == {"sdpa", "onednn"}
    assert first.packed == second.packed == (chosen[short] == "onednn")


def test_the_choice_is_kept_per_source_length_bucket_and_query_count():
    key = kernels.cross_attention_key
    assert key(16, 64, 4096, 5) == key(16, 64, 3000, 5) != key(16, 64, 4097, 5)
    assert key(16, 64, 4096, 5) != key(16, 64, 4096, 17)
    assert key(16, 64, 1, 1).endswith(f"threads={torch.get_num_threads()}")


# --------------------------------------------------------------------------------------------------
# An int8 model's keys/values in bfloat16
# --------------------------------------------------------------------------------------------------
needs_bf16_conv = pytest.mark.skipif(
    private_ops.private_op("conv-packed-bf16") is None, reason="oneDNN has no working bfloat16 convolution on this CPU"
)


@needs_bf16_conv
@pytest.mark.parametrize(("inputs", "group", "new"), [(1, 5, 1), (3, 2, 1), (2, 1, 3)])
@pytest.mark.parametrize("bias_kind", ["none", "padding"])
def test_an_int8_models_keys_values_go_to_bfloat16_within_its_rounding(
    inputs, group, new, bias_kind, fresh_choices, monkeypatch
):
    """On a CPU with native bfloat16 (forced here, so every CPU whose oneDNN has the kernel runs it), keys/values
    marked approximate are packed in bfloat16, by rule: nothing is timed. The context stays within bfloat16's
    rounding of the float64 oracle, and the probabilities path reads the kept tensors back in float32."""
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: True)
    k, v = projected(inputs, seed=7)
    bias = padding_bias(inputs, bias_kind)
    kept = CrossKeysValues(k, v, reused=True, approximate=True)
    for step in range(2):
        q = torch.randn(inputs * group, HEADS, new, DIM, generator=torch.Generator().manual_seed(step))
        expected, _ = oracle(q, k, v, bias)
        with torch.inference_mode():
            context, _ = kept.attend(q, bias)
        assert context.dtype == torch.float32
        error = (context.double() - expected).abs().max() / expected.abs().max()
        assert 0 < error < 2e-2  # rounded (so it did run in bfloat16), and no further than bfloat16 rounds
    assert kept.packed and kept.packed_dtype == torch.bfloat16
    assert kernels.summary()["measured_ms"] == {}  # a rule, not a measurement
    assert "onednn-bf16" in kernels.summary()["cross_attention"].values()
    with torch.inference_mode():
        context, probs = kept.attend(q, bias, output_probs=True)
    plain_k, plain_v = kept.plain()
    assert plain_k.dtype == plain_v.dtype == torch.float32
    assert (plain_k - k).abs().max() <= k.abs().max() * 2**-8  # bfloat16's rounding of what was packed


@needs_bf16_conv
@pytest.mark.parametrize(("inputs", "group", "new"), [(1, 5, 1), (3, 2, 1)])
@pytest.mark.parametrize("bias_kind", ["none", "padding"])
def test_a_bfloat16_models_keys_values_take_the_bfloat16_convolutions(
    inputs, group, new, bias_kind, fresh_choices, monkeypatch
):
    """A bfloat16 model's keys/values are packed as they are, by rule, on a CPU with native bfloat16: the context is
    within bfloat16's rounding of the float64 oracle on the same (bfloat16) numbers."""
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: True)
    k, v = (t.to(torch.bfloat16) for t in projected(inputs, seed=9))
    bias = padding_bias(inputs, bias_kind)
    kept = CrossKeysValues(k, v, reused=True)
    for step in range(2):
        q = torch.randn(inputs * group, HEADS, new, DIM, generator=torch.Generator().manual_seed(step))
        q = q.to(torch.bfloat16)
        expected, _ = oracle(q, k, v, bias)
        with torch.inference_mode():
            context, _ = kept.attend(q, bias)
        assert context.dtype == torch.bfloat16
        assert (context.double() - expected).abs().max() / expected.abs().max() < 2e-2
    assert kept.packed and kept.packed_dtype == torch.bfloat16
    assert kernels.summary()["measured_ms"] == {}  # a rule, not a measurement
    assert any(key.endswith("bfloat16-model") for key in kernels.summary()["cross_attention"])
    in_model_type = None if bias is None else bias.to(torch.bfloat16)  # as a bfloat16 model makes its mask
    with torch.inference_mode():  # a later call off the fast path reads them back in the model's type
        context, probs = kept.attend(q, in_model_type, output_probs=True)
    assert context.dtype == probs.dtype == torch.bfloat16
    assert (context.double() - expected).abs().max() / expected.abs().max() < 2e-2


@pytest.mark.parametrize(("native", "forced"), [(False, "auto"), (True, "sdpa"), (True, "onednn")])
def test_a_bfloat16_model_keeps_torchs_attention_without_native_bfloat16_or_when_told(
    native, forced, fresh_choices, monkeypatch
):
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: native)
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", forced)
    k, v = (t.to(torch.bfloat16) for t in projected(1, seed=10))
    q = torch.randn(5, HEADS, 1, DIM).to(torch.bfloat16)
    kept = CrossKeysValues(k, v, reused=True)
    with torch.inference_mode():
        context, _ = kept.attend(q, None)
    assert not kept.packed and kernels.summary()["measured_ms"] == {}
    assert (context.double() - oracle(q, k, v, None)[0]).abs().max() < 2e-2


@pytest.mark.parametrize(
    ("approximate", "native", "forced", "packs"),
    [
        (False, True, "auto", None),  # a float32 model never rounds (it times sdpa against onednn, as ever)
        (False, True, "onednn-bf16", True),  # forced on one, it means onednn
        (True, False, "auto", None),  # no native bfloat16: float32, timed
        (True, True, "onednn", True),  # the user forces a float32 kernel
        (True, True, "sdpa", False),  # ... or torch's attention: nothing packs
    ],
)
@needs_conv
def test_what_keeps_float32(approximate, native, forced, packs, fresh_choices, monkeypatch):
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: native)
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", forced)
    k, v = projected(1, seed=8)
    q = torch.randn(5, HEADS, 1, DIM)
    kept = CrossKeysValues(k, v, reused=True, approximate=approximate)
    with torch.inference_mode():
        context, _ = kept.attend(q, None)
    assert (context.double() - oracle(q, k, v, None)[0]).abs().max() < 1e-5
    assert kept.packed_dtype == torch.float32 and packs in (None, kept.packed)
