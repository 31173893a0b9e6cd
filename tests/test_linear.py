"""The linear layer's kernels: oneDNN with a fused activation at inference, F.linear while training, and int8."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import core
from core.models.linear import ACTIVATIONS, Linear, quantize_int8
from core.tools.tiny import BIGBIRD_TINY

ACTS = [None, *ACTIVATIONS]


@pytest.mark.parametrize("act", ACTS)
def test_inference_kernel_equals_the_training_path(act):
    """The fast path (no gradients tracked) gives the numbers of F.linear + activation, which training runs."""
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


def test_no_bias_and_non_contiguous_inputs():
    layer = Linear(16, 8, bias=False, activation="gelu_new")
    x = torch.randn(5, 3, 16).transpose(0, 1)
    with torch.inference_mode():
        assert torch.allclose(layer(x), F.gelu(F.linear(x, layer.weight), approximate="tanh"), atol=1e-5)


def test_gradients_flow_through_the_training_path():
    layer = Linear(6, 4, activation="gelu")
    layer(torch.randn(3, 6)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_checkpoint_names_are_nn_linear_names():
    assert set(Linear(4, 3).state_dict()) == {"weight", "bias"}
    assert set(Linear(4, 3, activation="relu").state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("act", ACTS)
def test_int8_fuses_every_activation(act):
    torch.manual_seed(3)
    layer = Linear(48, 96, activation=act)
    x = torch.randn(3, 5, 48)
    with torch.inference_mode():
        exact = layer(x)
        layer.quantize_int8()
        approx = layer(x)
    assert approx.shape == exact.shape
    assert F.cosine_similarity(exact.flatten(0, 1), approx.flatten(0, 1), dim=-1).min() > 0.99


def test_int8_layer_is_close_to_float_and_leaves_the_original_alone():
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


def test_int8_tiny_model_hidden_states_stay_close():
    """The whole encoder, quantized: per-token cosine to float32, the measure bench reports."""
    torch.manual_seed(2)
    config = core.BigBirdConfig(**BIGBIRD_TINY, vocab_size=100)  # 200 tokens take the block-sparse path
    model = core.BigBirdModel(config).eval()
    ids = torch.randint(5, 100, (2, 200))
    with torch.inference_mode():
        exact = model(input_ids=ids).last_hidden_state
        approx = quantize_int8(model)(input_ids=ids).last_hidden_state
    assert F.cosine_similarity(exact, approx, dim=-1).min() > 0.99
