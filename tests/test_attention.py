"""The block-sparse kernel against a dense oracle, the random-block plans, and the per-call fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

import bigbird
from bigbird.models.attention import (
    SoftmaxAndLse,
    block_sparse_attention,
    draw_plan,
    fused_kernel_applies,
    hf_plan,
    seeded_plan,
)


def dense_oracle(q, k, v, mask, block_size, plan):
    """Block-sparse attention spelled out densely: each query block's key blocks with their multiplicity.

    Query blocks 0 and n-1 see every key once. Block i sees block 0, i-1, i, i+1, its random blocks and
    block n-1; a block listed twice (e.g. a random block that is also global) counts twice in the softmax,
    except that rows 1 and n-2 see their global neighbour only through the window.
    """
    b, h, t, d = q.shape
    n = t // block_size
    counts = torch.zeros(h, n, n)
    counts[:, 0] = 1
    counts[:, -1] = 1
    for i in range(1, n - 1):
        for head in range(h):
            blocks = [i - 1, i, i + 1, *plan[head, i - 1].tolist()]
            if i != 1:
                blocks.append(0)
            if i != n - 2:
                blocks.append(n - 1)
            for j in blocks:
                counts[head, i, j] += 1
    weights = counts.repeat_interleave(block_size, 1).repeat_interleave(block_size, 2)  # (H, T, T)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    keep = weights[None] * mask[:, None, None, :].float()
    scores = scores.masked_fill(keep == 0, float("-inf"))
    probs = keep * torch.exp(scores - scores.amax(-1, keepdim=True))
    probs = probs / probs.sum(-1, keepdim=True)
    return (probs @ v) * mask[:, None, :, None]


@pytest.mark.parametrize("r", [0, 1, 3])
@pytest.mark.parametrize("num_blocks", [7, 12])
@pytest.mark.parametrize("plan_kind", ["random", "all_zero"])
@pytest.mark.parametrize("fused", [True, False])
def test_kernel_matches_dense_oracle(r, num_blocks, plan_kind, fused):
    """Both kernels (torch's fused CPU one, and the spelled-out one that training uses) on drawn plans and on
    transformers' all-zero eval plan, whose r repeats of block 0 the kernel folds into one weighted block."""
    torch.manual_seed(r * 100 + num_blocks)
    bs, h, d = 4, 3, 8
    t = num_blocks * bs
    q, k, v = (torch.randn(2, h, t, d, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, t)
    mask[1, t - 7 :] = 0
    plan = torch.randint(0, num_blocks, (h, num_blocks - 2, r))
    if plan_kind == "all_zero":
        plan = hf_plan(num_blocks, h, r)
    ours, _ = block_sparse_attention(q, k, v, mask, bs, plan, fused=fused)
    expected = dense_oracle(q, k, v, mask, bs, plan)
    assert (ours - expected).abs().max() < 1e-10


@pytest.mark.parametrize("middle", ["merged", "joint"])
@pytest.mark.parametrize("d", [16, 6])  # a head size whose 1/sqrt is a power of two (scaled on the queries), and not
@pytest.mark.parametrize("r", [0, 2])
def test_training_gradients_match_the_dense_oracles(d, r, middle, fresh_choices, monkeypatch):
    """The training path's gradients, its middle rows as two merged softmaxes (the windows' own backward, the
    softmax's row dots, the scale on the queries) or as one joint attention, are those of block-sparse attention
    written densely, in float64, over a padded batch and a drawn plan."""
    monkeypatch.setenv("BIGBIRD_TRAINING_ATTENTION", middle)
    torch.manual_seed(d * 10 + r)
    bs, h, n = 4, 3, 9
    t = n * bs
    leaves = [torch.randn(2, h, t, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    mask = torch.ones(2, t)
    mask[1, t - 6 :] = 0
    plan = torch.randint(0, n, (h, n - 2, r))
    upstream = torch.randn(2, h, t, d, dtype=torch.float64)
    grads = []
    for attend in (
        lambda *qkv: block_sparse_attention(*qkv, mask, bs, plan, fused=False)[0],
        dense_oracle_of(mask, bs, plan),
    ):
        out = attend(*leaves)
        grads.append(torch.autograd.grad(out, leaves, upstream))
    for ours, expected in zip(*grads, strict=True):
        assert (ours - expected).abs().max() < 1e-10


def test_the_training_middle_rows_are_chosen_by_measurement_once(fresh_choices):
    """Auto: the first tracked call times both ways (forward and backward) and keeps the choice for its shapes."""
    leaves = [torch.randn(1, 2, 8 * 4, 8, requires_grad=True) for _ in range(3)]
    plan = torch.randint(0, 8, (2, 6, 1))
    for _ in range(2):
        out, _ = block_sparse_attention(*leaves, torch.ones(1, 32), 4, plan)
        out.sum().backward()
    summary = bigbird.models.kernels.summary()
    (choice,) = summary["training_attention"].values()
    assert choice in ("merged", "joint") and len(summary["measured_ms"]) == 1
    with torch.no_grad():  # inference never asks
        block_sparse_attention(*leaves, torch.ones(1, 32), 4, plan)
    assert len(bigbird.models.kernels.summary()["measured_ms"]) == 1


def test_the_training_choice_is_timed_inside_a_checkpointed_layer(fresh_choices):
    """Gradient checkpointing recomputes a layer's forward in its backward and checks it saved the same tensors: the
    first call's timing (forward and backward of its own) must not count among the layer's."""
    leaves = [torch.randn(1, 2, 8 * 4, 8, requires_grad=True) for _ in range(3)]
    plan = torch.randint(0, 8, (2, 6, 1))

    def layer(q, k, v):
        return block_sparse_attention(q, k, v, torch.ones(1, 32), 4, plan)[0]

    out = torch.utils.checkpoint.checkpoint(layer, *leaves, use_reentrant=False)
    out.sum().backward()
    assert len(bigbird.models.kernels.summary()["training_attention"]) == 1


def dense_oracle_of(mask, block_size, plan):
    return lambda q, k, v: dense_oracle(q, k, v, mask, block_size, plan)


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_kernel_equals_the_parity_path_in_float32(batch):
    """The default inference path (fused kernel, strided views of (B, T, H, D) projections) gives the numbers of the
    spelled-out path that the gradient parity tests run, at a real block size and heads-last memory layout."""
    torch.manual_seed(batch)
    bs, h, n, d = 16, 4, 12, 16
    q, k, v = (torch.randn(batch, n * bs, h, d).transpose(1, 2) for _ in range(3))
    mask = torch.ones(batch, n * bs)
    mask[-1, -20:] = 0
    for plan in (hf_plan(n, h, 3), seeded_plan(2, n * bs, bs, h, 3, 4096)):
        with torch.no_grad():
            fast, _ = block_sparse_attention(q, k, v, mask, bs, plan)
        slow, _ = block_sparse_attention(q, k, v, mask, bs, plan, fused=False)
        assert (fast - slow).abs().max() < 1e-5


def test_tracked_gradients_take_the_spelled_out_path():
    q, k, v = (torch.randn(1, 2, 8 * 4, 8, requires_grad=True) for _ in range(3))
    assert not fused_kernel_applies(q, k, v)
    with torch.no_grad():
        assert fused_kernel_applies(q, k, v)
    out, _ = block_sparse_attention(q, k, v, torch.ones(1, 32), 4, hf_plan(8, 2, 1))
    out.sum().backward()
    assert q.grad is not None and k.grad.abs().sum() > 0


def test_kernel_dense_probs_match_oracle_layout():
    torch.manual_seed(0)
    bs, h, n = 4, 2, 16
    q, k, v = (torch.randn(1, h, n * bs, 8, dtype=torch.float64) for _ in range(3))
    plan = torch.stack([draw_plan(np.random.RandomState(s), n * bs, bs, 1, 2, 4096)[0] for s in range(h)])
    context, probs = block_sparse_attention(q, k, v, torch.ones(1, n * bs), bs, plan, output_probs=True)
    assert torch.allclose(probs.sum(-1), torch.ones(1, h, n * bs, dtype=torch.float64))
    assert (probs @ v - context).abs().max() < 1e-10  # no duplicate blocks in a drawn plan


@pytest.mark.parametrize(
    ("seq_len", "block_size", "r"),
    [(1024, 64, 3), (4096, 64, 3), (512, 64, 3), (832, 64, 3), (640, 64, 2), (480, 32, 3), (256, 16, 1)],
)
def test_seeded_plan_is_the_reference_training_plan(seq_len, block_size, r):
    """google-research seeds numpy with the layer index; transformers does the same in training mode."""
    config = transformers.BigBirdConfig(block_size=block_size, num_random_blocks=r, num_attention_heads=4)
    for layer in (0, 5):
        ref = BigBirdBlockSparseAttention(config, seed=layer).train()
        np.random.seed(layer)
        if seq_len in (1024, 3072, 4096):
            rows = [
                ref._bigbird_block_rand_mask(4096, 4096, block_size, block_size, r, last_idx=1024)[
                    : seq_len // block_size - 2
                ]
                for _ in range(4)
            ]
        else:
            plan_len, plan_r = ref._get_rand_attn_plan(seq_len, block_size, r)
            rows = ref._bigbird_block_rand_mask_with_head(seq_len, seq_len, block_size, block_size, 4, plan_len, plan_r)
        expected = torch.from_numpy(np.stack(rows).astype(np.int64))
        assert torch.equal(seeded_plan(layer, seq_len, block_size, 4, r, 4096), expected)


def test_hf_plan_is_all_zeros_like_reference_eval():
    plan = hf_plan(10, 4, 3)
    assert plan.shape == (4, 8, 3) and not plan.any()


def tiny(**overrides):
    base = dict(
        vocab_size=90,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=1024,
        block_size=8,
        num_random_blocks=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )
    return {**base, **overrides}


def test_seeded_mode_matches_reference_in_training_mode(tmp_path):
    """Our `seeded` plans at inference equal transformers' training-mode plans (seeded by layer index)."""
    torch.manual_seed(0)
    ref = transformers.BigBirdModel(transformers.BigBirdConfig(**tiny()))
    ref.save_pretrained(tmp_path)
    ref.train()  # dropout is 0, so training mode differs only in the random plan
    ours = bigbird.BigBirdModel.from_pretrained(tmp_path)
    ours.config.random_plan = "seeded"
    for layer in ours.layers:
        layer.attn.random_plan = "seeded"
    ids = torch.randint(3, 90, (2, 300))
    with torch.no_grad():
        expected = ref(ids).last_hidden_state
        seeded = ours(ids).last_hidden_state
    assert (expected - seeded).abs().max() <= 1e-4
    reloaded = bigbird.BigBirdModel.from_pretrained(tmp_path)  # the default, hf, plan differs
    with torch.no_grad():
        assert (reloaded(ids).last_hidden_state - seeded).abs().max() > 1e-3


def test_training_draws_fresh_plans():
    config = bigbird.BigBirdConfig(**tiny())
    attn = bigbird.BigBirdModel(config).layers[0].attn.train()
    torch.manual_seed(1)
    plans = [attn.plan(400) for _ in range(3)]
    assert not torch.equal(plans[0], plans[1]) or not torch.equal(plans[1], plans[2])
    torch.manual_seed(1)
    assert torch.equal(attn.plan(400), plans[0])  # reproducible under torch.manual_seed
    attn.eval()
    assert not attn.plan(400).any()


def test_short_input_runs_full_attention_for_that_call_only(tmp_path):
    """The reference switches a whole model to full attention after one short input (transformers #20031)."""
    torch.manual_seed(0)
    config = transformers.BigBirdConfig(**tiny())
    ref_sparse = transformers.BigBirdModel(config).eval()
    ref_sparse.save_pretrained(tmp_path)
    ref_full = transformers.BigBirdModel.from_pretrained(tmp_path, attention_type="original_full").eval()
    ours = bigbird.BigBirdModel.from_pretrained(tmp_path)
    short, long = torch.randint(3, 90, (1, 50)), torch.randint(3, 90, (1, 300))
    with torch.no_grad():
        assert (ours(short).last_hidden_state - ref_full(short).last_hidden_state).abs().max() <= 1e-4
        assert (ours(long).last_hidden_state - ref_sparse(long).last_hidden_state).abs().max() <= 1e-4
        assert (ours(long).last_hidden_state - ref_full(long).last_hidden_state).abs().max() > 1e-3


def test_no_random_blocks_runs():
    """The reference refuses num_random_blocks=0; the ITC layout without random blocks is still well defined."""
    torch.manual_seed(0)
    model = bigbird.BigBirdModel(bigbird.BigBirdConfig(**tiny(num_random_blocks=0))).eval()
    full = bigbird.BigBirdModel(bigbird.BigBirdConfig(**tiny(num_random_blocks=0, attention_type="original_full")))
    full.load_state_dict(model.state_dict())
    ids = torch.randint(3, 90, (2, 101))
    with torch.no_grad():
        out = model(ids).last_hidden_state
        assert torch.isfinite(out).all() and out.shape == (2, 101, 32)
        assert (out - full.eval()(ids).last_hidden_state).abs().max() > 1e-4  # it really ran sparse


@pytest.mark.parametrize("seq_len", [512, 576, 704])
def test_plans_exist_for_lengths_the_reference_cannot_plan(seq_len):
    """Where too few legal blocks exist for a row, the original raises; we fill the row with block 0."""
    plan = seeded_plan(0, seq_len, 64, 2, 3, 4096)
    assert plan.shape == (2, seq_len // 64 - 2, 3)
    assert plan.min() >= 0 and plan.max() < seq_len // 64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_kernel_runs_in_half_precision(dtype):
    """Half-precision inputs on the CPU (--dtype float16/bfloat16): the kernel's float32 log-sum-exps merge
    into half-precision rows, close to the float32 result."""
    torch.manual_seed(4)
    bs, h, n, d = 16, 4, 12, 16
    q, k, v = (torch.randn(2, n * bs, h, d).transpose(1, 2) for _ in range(3))
    mask = torch.ones(2, n * bs)
    mask[1, -20:] = 0
    for plan in (hf_plan(n, h, 3), seeded_plan(1, n * bs, bs, h, 3, 4096)):
        with torch.no_grad():
            low, _ = block_sparse_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, bs, plan)
            exact, _ = block_sparse_attention(q, k, v, mask, bs, plan, fused=False)
        assert low.dtype == dtype
        assert (low.float() - exact).abs().max() < 3e-2


def test_softmax_and_lse_gradients_are_the_spelled_out_ones():
    """The training path's softmax keeps only the probabilities for its backward pass: its gradients through the
    probabilities, the log-sum-exp or both are checked numerically (float64), and its forward is the spelled-out
    one bit for bit."""
    scores = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SoftmaxAndLse.apply, (scores,))
    assert torch.autograd.gradcheck(lambda s: SoftmaxAndLse.apply(s)[0], (scores,))
    assert torch.autograd.gradcheck(lambda s: SoftmaxAndLse.apply(s)[1], (scores,))
    single = torch.randn(2, 5, 8, 24)
    probs, lse = SoftmaxAndLse.apply(single)
    assert torch.equal(lse, single.logsumexp(-1))
    assert torch.equal(probs, torch.exp(single - single.logsumexp(-1)[..., None]))
