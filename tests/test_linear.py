"""The linear layer's kernels: the measured float32 choice at inference, F.linear while training, and int8 (exact
int8 arithmetic on inputs that would saturate a CPU without VNNI, on the path this CPU picks and the safe one)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import bigbird
from bigbird.models import cpu, kernels, private_ops
from bigbird.models.linear import ACTIVATIONS, Linear, _quantize_uint8, quantize_int8, quantize_weights
from bigbird.tools.tiny import BIGBIRD_TINY

ACTS = [None, *ACTIVATIONS]


@pytest.mark.parametrize("kernel", ["auto", *kernels.CANDIDATES, "private-ops-off"])
@pytest.mark.parametrize("act", ACTS)
def test_inference_kernel_equals_the_training_path(act, kernel, monkeypatch):
    """Every float32 kernel at inference (chosen by measurement, forced, or with torch's private ops switched
    off) gives the numbers of F.linear + activation, which training runs."""
    if kernel == "private-ops-off":
        monkeypatch.setenv("BIGBIRD_PRIVATE_OPS", "0")
    else:
        monkeypatch.setenv("BIGBIRD_KERNELS", kernel)
    torch.manual_seed(0)
    layer = Linear(24, 40, activation=act)
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        fast = layer(x)
    slow = layer(x)  # parameters require grad: the F.linear path
    assert slow.requires_grad and not fast.requires_grad
    reference = F.linear(x, layer.weight, layer.bias)
    if act is not None:
        reference = ACTIVATIONS[act](reference)
    assert (fast - reference).abs().max() < 1e-5
    assert (slow - reference).abs().max() < 1e-6


@pytest.mark.parametrize("kernel", ["auto", *kernels.CANDIDATES])
@pytest.mark.parametrize("act", [None, "gelu_new"])
def test_bfloat16_layers_choose_their_own_kernel_within_bfloat16_rounding(act, kernel, fresh_choices, monkeypatch):
    """A bfloat16 layer at inference runs one of float32's kernels, chosen (or forced) apart from float32's
    choices, where the CPU computes bfloat16 natively; elsewhere torch's F.linear. Whatever ran is within
    bfloat16's rounding of float32 arithmetic on the same bfloat16 numbers."""
    monkeypatch.setenv("BIGBIRD_KERNELS", kernel)
    torch.manual_seed(0)
    layer = Linear(64, 96, activation=act).bfloat16()
    x = torch.randn(3, 9, 64).bfloat16()
    reference = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    if act is not None:
        reference = ACTIVATIONS[act](reference)
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - reference).abs().max() < 2**-7 * reference.abs().max()  # bfloat16 keeps 8 bits
    chosen = kernels.summary()["bfloat16"]
    if cpu.has_native_bfloat16() and private_ops.private_op("linear-bf16") is not None:
        key = kernels.shape_key(64, 96, layer.post_op[0], 27, kernels.BFLOAT16).removeprefix("bfloat16 ")
        assert list(chosen) == [key] and chosen[key] in kernels.CANDIDATES
        assert kernel == "auto" or chosen[key] == kernel
        assert layer.packed == (chosen[key] == "onednn-packed")
    else:
        assert chosen == {}
    assert kernels.summary()["float32"] == {}  # its own choices, not float32's


@pytest.mark.parametrize("kernel", ["auto", "mkl", "onednn"])
@pytest.mark.parametrize("bias", [True, False])
def test_training_matmuls_give_f_linears_gradients(kernel, bias, fresh_choices, monkeypatch):
    """A tracked float32 forward runs backprop.linear: the forward and both gradients each through the kernel
    chosen (or forced) for its shape, recorded as training choices; the numbers are F.linear's to float32
    rounding, on a non-contiguous input too."""
    monkeypatch.setenv("BIGBIRD_KERNELS", kernel)
    torch.manual_seed(0)
    layer = Linear(48, 80, bias=bias, activation="gelu_new")
    x = torch.randn(37, 3, 48).transpose(0, 1).requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_() if bias else None
    upstream = torch.randn(3, 37, 80)
    (layer(x) * upstream).sum().backward()
    ours = (x.grad, layer.weight.grad, layer.bias.grad if bias else None)
    x.grad = None
    (ACTIVATIONS["gelu_new"](F.linear(x, weight, b)) * upstream).sum().backward()
    for mine, reference in zip(ours, (x.grad, weight.grad, b.grad if bias else None), strict=True):
        assert (mine is None) == (reference is None)
        if mine is not None:
            assert torch.allclose(mine, reference, rtol=1e-5, atol=1e-5)
    chosen = kernels.summary()["training"]
    assert {key.split()[0] for key in chosen} == {"forward", "input-grad", "weight-grad"}
    onednn = private_ops.private_op("linear") is not None
    assert kernel == "auto" or set(chosen.values()) == {kernel if onednn else "mkl"}


def test_training_under_bfloat16_autocast_is_torchs_own_path():
    """autocast casts inside F.linear; the training matmuls step aside for it (a bfloat16 result, no choice)."""
    layer = Linear(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(4, 16, requires_grad=True))
    assert y.dtype == torch.bfloat16


def test_no_bias_and_non_contiguous_inputs():
    layer = Linear(16, 8, bias=False, activation="gelu_new")
    x = torch.randn(5, 3, 16).transpose(0, 1)
    expected = F.gelu(F.linear(x, layer.weight), approximate="tanh").detach()  # before the layer may pack
    with torch.inference_mode():
        assert torch.allclose(layer(x), expected, atol=1e-5)


def test_gradients_flow_through_the_training_path():
    layer = Linear(6, 4, activation="gelu")
    layer(torch.randn(3, 6)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_checkpoint_names_are_nn_linear_names():
    assert set(Linear(4, 3).state_dict()) == {"weight", "bias"}
    assert set(Linear(4, 3, activation="relu").state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("act", ACTS)
def test_int8_fuses_every_activation(act, int8_path):
    torch.manual_seed(3)
    layer = Linear(48, 96, activation=act)
    x = torch.randn(3, 5, 48)
    with torch.inference_mode():
        exact = layer(x)
        layer.quantize_int8()
        approx = layer(x)
    assert approx.shape == exact.shape
    assert F.cosine_similarity(exact.flatten(0, 1), approx.flatten(0, 1), dim=-1).min() > 0.99


@pytest.mark.parametrize("act", [None, "gelu", "relu"])
@pytest.mark.parametrize("rows", [3, 300])
def test_int8_kernels_give_the_same_numbers(act, rows, monkeypatch, tmp_path):
    """fbgemm and oneDNN get the same int8 weights and activation scale: the choice between them (made by timing,
    per machine) never changes an output beyond float rounding."""
    monkeypatch.setenv("BIGBIRD_CACHE_DIR", str(tmp_path))
    torch.manual_seed(6)
    layer = Linear(64, 48, activation=act)
    x = torch.randn(rows, 64)
    outputs = {}
    with torch.inference_mode():
        layer.quantize_int8()
        for kernel in ("fbgemm", "onednn"):
            monkeypatch.setenv("BIGBIRD_INT8_KERNELS", kernel)
            outputs[kernel] = layer(x)
    assert set(layer.int8.packed) == {"fbgemm", "onednn"}
    assert (outputs["fbgemm"] - outputs["onednn"]).abs().max() <= 1e-5 * outputs["onednn"].abs().max()
    assert copy.deepcopy(layer).int8.packed == {}  # packed again on demand, like the float32 packing


def test_int8_layer_is_close_to_float_and_leaves_the_original_alone(int8_path):
    torch.manual_seed(1)
    model = torch.nn.Sequential(Linear(64, 128, activation="gelu"), Linear(128, 32))
    quantized = quantize_int8(model)
    x = torch.randn(4, 64)
    with torch.inference_mode():
        exact, approx = model(x), quantized(x)
    assert model[0].int8 is None and quantized[0].int8 is not None
    assert "int8" in repr(quantized[0])
    assert not torch.equal(exact, approx)  # it really is another kernel
    assert F.cosine_similarity(exact, approx, dim=-1).min() > 0.99


def test_int8_tiny_model_hidden_states_stay_close(int8_path):
    """The whole encoder, quantized: per-token cosine to float32, the measure bench reports."""
    torch.manual_seed(2)
    config = bigbird.BigBirdConfig(**BIGBIRD_TINY, vocab_size=100)  # 200 tokens take the block-sparse path
    model = bigbird.BigBirdModel(config).eval()
    ids = torch.randint(5, 100, (2, 200))
    with torch.inference_mode():
        exact = model(input_ids=ids).last_hidden_state
        approx = quantize_int8(model)(input_ids=ids).last_hidden_state
    assert F.cosine_similarity(exact, approx, dim=-1).min() > 0.99


def saturating_int8_matmul(u8: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u8 @ w.T as a CPU without VNNI sums it (vpmaddubsw): pairs of products added in int16, saturating."""
    products = u8.long()[:, None, :] * w.long()[None, :, :]  # (rows, out, in)
    pairs = products[..., 0::2] + products[..., 1::2]
    return pairs.clamp(-(2**15), 2**15 - 1).sum(-1)


def test_int8_is_exact_int8_arithmetic_where_products_would_saturate(int8_path):
    """Weights over the full int8 range times activations near the top of uint8: int16 pair sums of full-range
    weights would clip. The kernel must give exact int8 arithmetic on the values it quantized (computed here in
    int64 from the same values), on whatever CPU runs this, and stay close to float32."""
    torch.manual_seed(4)
    layer = Linear(256, 64)
    with torch.no_grad():
        layer.weight.uniform_(-1, 1)
    x = 0.9 + 0.1 * torch.rand(8, 256)  # one scale from 0: every activation quantizes to 230..255
    with torch.inference_mode():
        exact_float = layer(x)
        layer.quantize_int8()
        y = layer(x)
    u8, scale, zero_point = _quantize_uint8(x)
    assert zero_point == 0 and u8.min() >= 225
    levels = 63 if int8_path.startswith("safe") or not cpu.has_vnni() else 127
    values, scales = quantize_weights(layer.weight.detach(), levels)
    assert values.abs().max() == levels
    exact_int = (u8.long() @ values.long().T).double()
    expected = exact_int * scale * scales.double() + layer.bias.double()
    assert (y.double() - expected).abs().max() <= 1e-5 * expected.abs().max()
    # These inputs would saturate full-range weights on a CPU without VNNI; the weights kept here would not.
    full, _ = quantize_weights(layer.weight.detach(), 127)
    assert not torch.equal(saturating_int8_matmul(u8, full), u8.long() @ full.long().T)
    assert torch.equal(saturating_int8_matmul(u8, values), exact_int.long()) or levels == 127
    assert F.cosine_similarity(y, exact_float, dim=-1).min() > 0.999


def test_int8_full_range_encoder_stays_close_to_float32(int8_path):
    """A whole encoder whose weights fill the int8 range (uniform, unlike a fresh init's near-Gaussian ones):
    per-token cosine to float32 of at least 0.999."""
    torch.manual_seed(5)
    model = bigbird.BigBirdModel(bigbird.BigBirdConfig(**BIGBIRD_TINY, vocab_size=100)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Linear):
                module.weight.uniform_(-0.1, 0.1)
    ids = torch.randint(5, 100, (2, 200))
    with torch.inference_mode():
        exact = model(input_ids=ids).last_hidden_state
        approx = bigbird.quantize_int8(model)(input_ids=ids).last_hidden_state
    assert F.cosine_similarity(exact, approx, dim=-1).min() > 0.999


def test_core_quantize_int8_returns_the_int8_model():
    model = torch.nn.Sequential(Linear(8, 4)).eval()
    copied = bigbird.quantize_int8(model)
    assert copied is not model and copied[0].int8 is not None and model[0].int8 is None
    assert bigbird.quantize_int8(model, inplace=True) is model and model[0].int8 is not None


@pytest.mark.parametrize("rows", [3, 300])
def test_int8_without_float_weights_gives_the_same_numbers_in_a_quarter_of_the_memory(rows, int8_path):
    """keep_float=False (the CLI's tasks and bench) drops the float weights: the same int8 values and scales run,
    so the numbers are those of a model that kept them, on either kernel, and a second kernel's packing reads the
    kept int8 values instead."""
    torch.manual_seed(5)
    model = torch.nn.Sequential(Linear(48, 96, activation="gelu"), Linear(96, 48))
    x = torch.randn(rows, 48)
    kept, lean = quantize_int8(model), quantize_int8(model, keep_float=False)
    with torch.inference_mode():
        expected = kept(x)
        assert torch.equal(lean(x), expected)
        for layer in lean:  # a kernel it has not packed for yet: packed from the int8 values
            other = next(name for name in ("fbgemm", "onednn") if name not in layer.int8.packed)
            if private_ops.private_op({"fbgemm": "qlinear-fbgemm", "onednn": "qlinear"}[other]) is not None:
                layer._run_int8(other, x if layer.in_features == 48 else lean[0](x))
    with torch.inference_mode():
        assert torch.equal(lean(x), expected)
    for layer in lean:
        assert layer.weight.is_meta and layer.weight.shape == (layer.out_features, layer.in_features)
        assert layer.int8.values is not None and layer.int8.values.dtype == torch.int8
    assert all(not layer.weight.is_meta and layer.int8.values is None for layer in kept if layer.int8.packed)
    lean.apply(lambda m: m.quantize_int8(keep_float=False) if isinstance(m, Linear) else None)  # a no-op again
    with torch.inference_mode():
        assert torch.equal(lean(x), expected)


def test_int8_without_float_weights_refuses_what_needs_them_in_one_sentence():
    layer = quantize_int8(torch.nn.Sequential(Linear(8, 4)), keep_float=False)
    with pytest.raises(RuntimeError, match="runs int8 only .* can't track gradients or run on cpu"):
        layer(torch.randn(2, 8, requires_grad=True))
    with pytest.raises(RuntimeError, match="runs int8 only .* can't be saved: save the float32 model"):
        layer.state_dict()
