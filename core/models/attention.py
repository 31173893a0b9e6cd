"""The one attention module of the toolkit: full attention and BigBird block-sparse (ITC) attention.

Both families (BigBird and the BigBirdPegasus encoder) use `Attention`; the Pegasus decoder uses
`full_attention` directly. Block-sparse attention follows the ITC layout of the paper:

* query blocks 0 and n-1 are global: they attend to every key;
* every other query block i attends to key block 0, the window i-1, i, i+1, `num_random_blocks` random
  blocks, and key block n-1. Rows 1 and n-2 see the first/last block through their window already, so the
  duplicate slot is excluded rather than counted twice.

All rows 1..n-2 are computed together, with no Python loop over blocks or heads, in two parts merged through
their log-sum-exps: the window, read as overlapping views of K and V, and the other blocks (first, random,
last). Under transformers' eval plan the other blocks are the same two for every row, so that part is a single
attention of all the middle queries against them. See ARCHITECTURE.md for why.

Random-block plans are pure functions returning an int64 tensor (heads, n-2, r) of key-block indices:
`hf_plan` (transformers' eval behaviour: all zeros), `seeded_plan` (google-research: a fixed plan per
layer from `np.random.seed(layer_idx)`), and `draw_plan` (a fresh plan, used while training).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels, private_ops
from .config import ATTENTION_TYPES
from .linear import Linear

# Masked scores get this added, as in the original implementation; exp(-1e4) underflows to 0 in fp32.
MASK_PENALTY = -10000.0
# Layouts of the paper's plans: these lengths use the original 1024-token random plan.
LEGACY_PLAN_LENGTHS = (1024, 3072, 4096)


# --------------------------------------------------------------------------------------------------
# Random-block plans
# --------------------------------------------------------------------------------------------------
def hf_plan(num_blocks: int, num_heads: int, num_random_blocks: int) -> torch.Tensor:
    """transformers' eval-mode plan: every random slot points at key block 0."""
    return torch.zeros(num_heads, num_blocks - 2, num_random_blocks, dtype=torch.long)


@functools.lru_cache(maxsize=1024)
def seeded_plan(
    layer_idx: int, seq_len: int, block_size: int, num_heads: int, num_random_blocks: int, max_seq_len: int
) -> torch.Tensor:
    """google-research's plan: the random state is seeded with the layer index, so the plan is fixed.

    Drawing it takes milliseconds of Python per layer, so each (layer, length) plan is drawn once and kept;
    callers only read it.
    """
    return draw_plan(np.random.RandomState(layer_idx), seq_len, block_size, num_heads, num_random_blocks, max_seq_len)


def draw_plan(
    rng: np.random.RandomState,
    seq_len: int,
    block_size: int,
    num_heads: int,
    num_random_blocks: int,
    max_seq_len: int,
) -> torch.Tensor:
    """Draw a random-block plan with the original algorithm (the same draws, in the same order)."""
    num_blocks = seq_len // block_size
    if seq_len in LEGACY_PLAN_LENGTHS:
        rows = [_legacy_rows(rng, max_seq_len // block_size, num_random_blocks, block_size) for _ in range(num_heads)]
        plan = np.stack([r[: num_blocks - 2] for r in rows])
    else:
        plan = _planned_rows(rng, num_blocks, num_heads, num_random_blocks)
    return torch.from_numpy(plan.astype(np.int64))


def _legacy_rows(rng: np.random.RandomState, num_blocks: int, r: int, block_size: int) -> np.ndarray:
    """The plan the paper used for 1024/3072/4096 tokens: random blocks drawn below token 1024.

    Rows near the end draw from the whole prefix, as the original did (it never excluded their window).
    """
    rows = np.zeros((num_blocks - 2, r), dtype=np.int64)
    middle = np.arange(1, num_blocks - 1)
    last = 1024 // block_size - 1 if 1024 > 2 * block_size else num_blocks - 1
    for i in range(1, num_blocks - 1):
        if i == 1:
            choices = middle[2:last]
        elif i == 2:
            choices = middle[3:last]
        elif i in (num_blocks - 3, num_blocks - 2):
            choices = middle[:last]
        else:
            start, end = i - 2, i
            if start > last:
                choices = middle[:last]
            elif end + 1 == last:
                choices = middle[:start]
            else:
                choices = np.concatenate((middle[:start], middle[end + 1 : last]))
        rows[i - 1] = _fill(rng.permutation(choices)[:r], r)
    return rows


def _row_choices(rng: np.random.RandomState, block: int, start: int, end: int, r: int) -> np.ndarray:
    """Pick `r` blocks in [start, end) outside the row's window and the global blocks, by permutation."""
    illegal = {block - 1, block, block + 1, 0, end - 1}
    if block == 1:
        illegal.add(end - 2)
    if block == end - 2:
        illegal.add(1)
    picked = [b for b in rng.permutation(np.arange(start, end)) if b not in illegal]
    return _fill(np.array(picked[:r], dtype=np.int64), r)


def _fill(picked: np.ndarray, r: int) -> np.ndarray:
    """Pad a row that found fewer than `r` legal blocks with block 0 (the original raises on such lengths)."""
    return np.concatenate([picked, np.zeros(r - len(picked), dtype=np.int64)])


def _planned_rows(rng: np.random.RandomState, num_blocks: int, num_heads: int, r: int) -> np.ndarray:
    """The general plan: rows are split in up to two spans, each drawing from its own range of key blocks."""
    if 2 * r + 5 < num_blocks:
        spans = [(2 * r + 5, r), (num_blocks, 0)]
    elif r + 5 < num_blocks:
        spans = [(r + 5, r // 2), (num_blocks, r - r // 2)]
    else:
        spans = [(num_blocks, r)]
    ends = [end for end, _ in spans]
    counts = [count for _, count in spans]
    last_span = ends.index(num_blocks)
    plan = np.zeros((num_heads, num_blocks, sum(counts[: last_span + 1])), dtype=np.int64)
    offset = np.cumsum([0, *counts])  # column where each span's random blocks start

    def fill(rows: range, span: int, key_start: int) -> None:
        cols = slice(offset[span], offset[span + 1])
        for row in rows:
            for h in range(num_heads):
                plan[h, row, cols] = _row_choices(rng, row, key_start, ends[span], counts[span])

    for idx in range(last_span + 1):
        if idx > 0:
            if counts[idx] > 0:
                fill(range(1, ends[idx - 1]), idx, ends[idx - 1])
            for earlier in range(idx):
                if counts[earlier] > 0:
                    fill(range(ends[idx - 1], ends[idx]), earlier, ends[earlier - 1] if earlier > 0 else 0)
        if counts[idx] == 0:
            continue
        first_row = ends[idx - 1] if idx > 0 else 1
        fill(range(first_row, ends[idx]), idx, ends[idx - 1] if idx > 0 else 0)
    return plan[:, 1 : num_blocks - 1]


# --------------------------------------------------------------------------------------------------
# Masks and padding
# --------------------------------------------------------------------------------------------------
def additive_mask(mask: torch.Tensor, dtype: torch.dtype, causal: bool = False) -> torch.Tensor:
    """(B, T) validity mask → (B, 1, Tq, T) additive bias: 0 where attended, the dtype's min elsewhere."""
    keep = mask.bool()[:, None, None, :]
    if causal:
        t = mask.shape[1]
        keep = keep & torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()
    bias = torch.zeros(keep.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~keep, torch.finfo(dtype).min)


def causal_bias(
    mask: torch.Tensor | None, new: int, past: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """Additive (rows, 1, new, past+new) bias of a decoder: causal over the cached and the new tokens, plus the
    (rows, past+new) padding mask. A single new token with no padding sees every key, so it needs no bias (the
    common decoding step)."""
    total = past + new
    if mask is None and new == 1:
        return None
    query_pos = torch.arange(past, total, device=device)[:, None]
    keep = (torch.arange(total, device=device)[None, :] <= query_pos)[None, None]  # (1, 1, new, total)
    if mask is not None:
        keep = keep & mask.bool()[:, None, None, :]  # (rows, 1, new, total)
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)


def sparse_fits(seq_len: int, block_size: int, num_random_blocks: int) -> bool:
    """Block-sparse needs room for the global, window and random blocks; shorter inputs run full attention."""
    return seq_len > (5 + 2 * num_random_blocks) * block_size


def runs_block_sparse(config: Any, length: int) -> bool:
    """Whether an input of `length` tokens (padding included) runs block-sparse attention in the encoder `config`
    describes: the config asks for it, the input has room for the sparse layout, and the stack is no decoder.

    The one owner of this fact: both model families decide each call by it, and the tasks' batching rule does too
    (inputs share a forward pass only where each runs as it would alone), so the two can never disagree. BigBird's
    one stack is a causal decoder when `is_decoder` says so; BigBirdPegasus's encoder never is (its config's
    `is_decoder` is the causal LM's, which has no encoder)."""
    decoder = config.is_decoder and config.model_type != "bigbird_pegasus"
    return (
        config.attention_type == "block_sparse"
        and not decoder
        and sparse_fits(length, config.block_size, config.num_random_blocks)
    )


def pad_to_blocks(
    embeds: torch.Tensor, mask: torch.Tensor, block_size: int, pad_embedding: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) embeddings and their (B, T) mask padded invisibly to a whole number of blocks, which the sparse
    layout needs: the new positions hold `pad_embedding` (the pad token's embedding) and are masked out as keys;
    the caller cuts them off again after the last layer."""
    pad = (-embeds.shape[1]) % block_size
    if not pad:
        return embeds, mask
    batch = embeds.shape[0]
    filler = pad_embedding.reshape(1, 1, -1).expand(batch, pad, -1).to(embeds.dtype)
    return torch.cat([embeds, filler], dim=1), F.pad(mask, (0, pad), value=0)


# --------------------------------------------------------------------------------------------------
# Attention kernels
# --------------------------------------------------------------------------------------------------
def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    dropout: float = 0.0,
    output_probs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention over (B, H, T, D) tensors with an additive bias; probabilities only on request."""
    if not output_probs:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout), None
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    probs = scores.softmax(dim=-1)
    return F.dropout(probs, dropout, training=dropout > 0) @ v, probs


def other_key_blocks(
    num_blocks: int, plan: torch.Tensor, merge_repeats: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each head and query block 1..n-2, the key blocks it reads outside its window: first, random, last.

    Returns an int64 table (H, n-2, 2 + r) and a per-slot additive bias (n-2, 2 + r): row 1's first slot and
    row n-2's last slot repeat a window block and are excluded.

    With `merge_repeats` and transformers' eval plan (every random slot is block 0), the table shrinks to
    (1, 1, 2): the blocks 0 and n-1 for every row, block 0 carrying log(1 + r) of bias, since m equal keys weigh
    in the softmax as one key with log(m) added to its score (row 1 has only the r random copies).
    """
    heads, rows, r = plan.shape
    device = plan.device
    lowest = torch.finfo(dtype).min
    if merge_repeats and not plan.any():
        table = torch.tensor([[[0, num_blocks - 1]]], device=device)
        bias = torch.zeros(rows, 2, dtype=dtype, device=device)
        bias[:, 0] = math.log(1 + r)
        bias[0, 0] = math.log(r) if r else lowest
        bias[-1, 1] = lowest
        return table, bias
    first = torch.zeros(heads, rows, 1, dtype=torch.long, device=device)
    table = torch.cat([first, plan, torch.full_like(first, num_blocks - 1)], dim=2)
    bias = torch.zeros(rows, r + 2, dtype=dtype, device=device)
    bias[0, 0] = lowest
    bias[-1, -1] = lowest
    return table, bias


def fused_kernel_applies(*tensors: torch.Tensor) -> bool:
    """Whether torch's fused CPU kernel can run: CPU tensors with no gradient to track (it returns a log-sum-exp
    that autograd does not differentiate)."""
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return all(t.device.type == "cpu" for t in tensors) and not tracked and _flash_for_cpu() is not None


def _flash_for_cpu() -> Any:
    """torch's fused CPU attention kernel that also returns each query's log-sum-exp (None where absent or
    not working: private_ops.private_op checks it once).

    The public `scaled_dot_product_attention` keeps the log-sum-exp to itself, and merging two partial
    softmaxes needs it.
    """
    return private_ops.private_op("flash")


def partial_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, fused: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Softmax attention over one part of each query's keys, with the part's log-sum-exp for merging.

    (B, H, L, D) queries against (B, H, S, D) keys with an additive bias broadcast to (B, H, L, S) (None: no
    padding to mask). `fused` runs torch's CPU kernel, which reads strided and overlapping views in place and
    never materialises the scores; otherwise the scores are spelled out (differentiable, any device) and
    returned for attention maps.
    """
    if fused:
        out, lse = _flash_for_cpu()(q, k, v, 0.0, False, attn_mask=None if bias is None else bias.to(q.dtype))
        return out, lse, None
    scale = 1 / math.sqrt(q.shape[-1])
    if math.frexp(scale)[0] == 0.5:
        # A power of two (head_dim 64, 16, 256...) scales exactly: on the queries it gives the scores' very bits
        # and spares a pass, and a score-sized temporary, over the scores and their gradient.
        scores = (q * scale) @ k.transpose(-1, -2)
    else:
        scores = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    probs, lse = SoftmaxAndLse.apply(scores)
    return probs @ v, lse, scores


class SoftmaxAndLse(torch.autograd.Function):
    """softmax(scores) and logsumexp(scores) over the last dim, differentiable through both, keeping only the
    probabilities for the backward pass.

    Spelled out (`lse = scores.logsumexp(-1)`, `probs = exp(scores - lse)`), autograd keeps the scores too (for
    logsumexp's backward) and its backward makes three more score-sized tensors; for a training step of
    bigbird-roberta-base at 4096 tokens the scores of one layer's attention are ~95 MiB, and with gradient
    checkpointing that layer's backward is the step's peak. Both gradients follow from the probabilities p alone:
    d lse/d s = p, and d p_j/d s = p_j (e_j - p), so grad_s = p * (grad_p - <grad_p, p> + grad_lse).
    The forward pass is the spelled-out one, so its numbers are unchanged.
    """

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lse = scores.logsumexp(dim=-1)
        probs = torch.sub(scores, lse[..., None]).exp_()
        ctx.save_for_backward(probs)
        ctx.scores_dtype = scores.dtype
        return probs, lse

    @staticmethod
    def backward(ctx: Any, grad_probs: torch.Tensor | None, grad_lse: torch.Tensor | None) -> torch.Tensor:
        (probs,) = ctx.saved_tensors
        if grad_probs is None:
            return (probs * grad_lse[..., None]).to(ctx.scores_dtype)
        dot = _row_dots(grad_probs, probs)
        if grad_lse is not None:
            dot = dot - grad_lse
        grad = grad_probs - dot[..., None]
        return grad.mul_(probs).to(ctx.scores_dtype)


def _row_dots(a: torch.Tensor, b: torch.Tensor, pieces: int = 16) -> torch.Tensor:
    """<a, b> over the last dim, per row: products and sums a slice of rows at a time, so that no score-sized
    temporary is made (the peak of a checkpointed layer's backward). As one batch of (1, S) x (S, 1) products it
    runs ten times slower in bfloat16 on CPUs (bigbird-roberta-base, 4096 tokens: 0.45 s of a 5.5 s step)."""
    rows = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    step = -(-rows[0].shape[0] // pieces)
    return torch.cat([(x * y).sum(-1) for x, y in zip(rows[0].split(step), rows[1].split(step), strict=True)]).view(
        a.shape[:-1]
    )


class _Windows(torch.autograd.Function):
    """Each middle block's window of keys or values (blocks i-1, i, i+1), as overlapping views of x, and a
    backward that adds the three shifted thirds of the gradient into place: torch's generic backward of
    `unfold` takes ten times as long (bigbird-roberta-base, 4096 tokens: 0.3 s of a 5.5 s step)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bs: int) -> torch.Tensor:
        ctx.bs, ctx.shape = bs, x.shape
        return x.unfold(2, 3 * bs, bs).transpose(-1, -2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        bs, (b, h, t, d) = ctx.bs, ctx.shape
        n = t // bs
        out = grad.new_zeros(b, h, n, bs, d)
        for i in range(3):  # the window's i-th block of row r is block r + i
            out[:, :, i : i + n - 2] += grad[:, :, :, i * bs : (i + 1) * bs]
        return out.view(b, h, t, d), None


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    block_size: int,
    plan: torch.Tensor,
    output_probs: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ITC block-sparse attention over (B, H, T, D) tensors; T is a multiple of `block_size`.

    `mask` is the (B, T) validity of tokens; `plan` the (H, T/block_size - 2, r) random key blocks.
    Middle query blocks attend in two parts merged through their log-sum-exps: the sliding window, read as
    overlapping views of K and V (nothing is copied), and the other blocks (first, random, last). `fused`
    picks torch's fused CPU kernel for both parts (the default where it applies and no probabilities are
    asked for); the spelled-out path gives the same numbers. Outputs at padded query positions are zero,
    as in the reference.
    """
    b, h, t, d = q.shape
    bs = block_size
    n = t // bs
    if fused is None:
        fused = not output_probs and fused_kernel_applies(q, k, v)
    valid = mask.to(q.dtype)
    padded = not bool(valid.all())  # without padding the key bias is all zeros, and the kernels can skip it
    key_bias = (1.0 - valid) * MASK_PENALTY  # (B, T)

    # Global query blocks 0 and n-1 attend to every key.
    q_global = torch.cat([q[:, :, :bs], q[:, :, -bs:]], dim=2)
    global_bias = key_bias[:, None, None, :] if padded else None
    global_ctx, global_probs = full_attention(q_global, k, v, global_bias, output_probs=output_probs)

    # Rows 1..n-2, with batch and heads in one leading dim: (B*H, n-2, ...). With one sequence the dims merge
    # as they are; a batch needs (B, H, T, D) memory for that, so that every window stays a view.
    if b > 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    q_rows = q.unflatten(2, (n, bs))[:, :, 1:-1].flatten(0, 1)

    def per_head(bias: torch.Tensor) -> torch.Tensor:
        """(B, H|1, n-2, S) key bias → (B*H, n-2, 1, S)."""
        return bias[:, :, :, None].expand(b, h, -1, -1, -1).flatten(0, 1)

    def windows(x: torch.Tensor) -> torch.Tensor:
        return (_Windows.apply(x, bs) if x.requires_grad else x.unfold(2, 3 * bs, bs).transpose(-1, -2)).flatten(0, 1)

    window_bias = per_head(key_bias.unfold(1, 3 * bs, bs)[:, None]) if padded else None
    table, slot_bias = other_key_blocks(n, plan.to(q.device), merge_repeats=not output_probs, dtype=q.dtype)
    other_bias = key_bias.view(b, n, bs)[:, table] + slot_bias[:, :, None]  # (B, H|1, n-2, slots, bs)
    if table.shape[:2] == (1, 1):
        # Every row reads the same few blocks (transformers' eval plan, merged): one attention of all the middle
        # queries against them, rather than n-2 small ones; each query block keeps its own row of the bias.
        shared = other_bias[:, 0, :, None].flatten(-2).expand(b, n - 2, bs, -1).flatten(1, 2)[:, None]
        out, lse, _ = partial_attention(
            q[:, :, bs:-bs], _shared_blocks(k, table, bs), _shared_blocks(v, table, bs), shared, fused
        )
        other = out.flatten(0, 1).unflatten(1, (n - 2, bs)), lse.flatten(0, 1).unflatten(1, (n - 2, bs)), None
        window = partial_attention(q_rows, windows(k), windows(v), window_bias, fused)
        middle = _merged(window, other)
    else:
        other_bias = per_head(other_bias.flatten(-2).expand(b, -1, n - 2, -1))
        k_other, v_other = _gather_blocks(k, table, bs), _gather_blocks(v, table, bs)
        rows = MiddleRows(q_rows, windows(k), windows(v), window_bias, k_other, v_other, other_bias)
        tracked = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
        if not fused and not output_probs and tracked and _joint_chosen(rows, heads=h):
            middle = _joint(rows)
        else:
            window, other = _two_parts(rows, fused)
            middle = _merged(window, other)
    middle = middle.unflatten(0, (b, h))
    # Rows are written into (B, T, H, D) memory, so that the caller merges the heads with a view.
    context = q.new_empty(b, t, h, d).transpose(1, 2)
    context[:, :, :bs], context[:, :, -bs:] = global_ctx[:, :, :bs], global_ctx[:, :, bs:]
    context[:, :, bs:-bs] = middle.flatten(2, 3)
    if padded:
        context = context * valid[:, None, :, None]
    if not output_probs:
        return context, None
    lse = torch.logaddexp(window[1], other[1])
    window_probs, other_probs = (
        torch.exp(part[2] - lse[..., None]).view(b, h, n - 2, bs, -1) for part in (window, other)
    )
    return context, _dense_probs(global_probs, window_probs, other_probs, table, bs)


def _merged(window: tuple[torch.Tensor, ...], other: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The context of two partial attentions over disjoint keys, from their outputs and log-sum-exps: the two parts'
    softmax masses are exp(lse), so the window's share of their sum is sigmoid(lse_w - lse_o)."""
    share = torch.sigmoid(window[1] - other[1])[..., None].to(window[0].dtype)  # the kernel keeps lse in float32
    return torch.lerp(other[0], window[0], share)


class MiddleRows(NamedTuple):
    """What the middle query blocks attend to in a training step: each row's window and its other blocks, with
    their key biases, (B*H, n-2, ...) each."""

    q: torch.Tensor
    k_window: torch.Tensor
    v_window: torch.Tensor
    window_bias: torch.Tensor | None
    k_other: torch.Tensor
    v_other: torch.Tensor
    other_bias: torch.Tensor


def _two_parts(rows: MiddleRows, fused: bool) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The window's and the other blocks' partial attentions, each with its log-sum-exp (for `_merged`)."""
    window = partial_attention(rows.q, rows.k_window, rows.v_window, rows.window_bias, fused)
    other = partial_attention(rows.q, rows.k_other, rows.v_other, rows.other_bias, fused)
    return window, other


def _joint(rows: MiddleRows) -> torch.Tensor:
    """The middle rows as one attention over their window's and their other blocks' keys, concatenated (copies of
    both), through torch's fused kernel and its fused backward: the same softmax as `_merged`'s two, rounded
    otherwise. Which of the two a training step runs is measured (`_joint_chosen`)."""
    keys = torch.cat([rows.k_window, rows.k_other], dim=2)
    values = torch.cat([rows.v_window, rows.v_other], dim=2)
    window_bias = rows.window_bias
    if window_bias is None:
        window_bias = rows.other_bias.new_zeros(*rows.other_bias.shape[:-1], rows.k_window.shape[2])
    bias = torch.cat([window_bias, rows.other_bias], dim=-1).to(rows.q.dtype)
    return F.scaled_dot_product_attention(rows.q, keys, values, attn_mask=bias)


def _joint_chosen(rows: MiddleRows, heads: int) -> bool:
    """Whether the joint attention (`_joint`) or the merged two (`_two_parts`) run this training step's middle rows:
    measured once per machine, head layout, length, block size and type (forward and backward on copies of this
    call's tensors), like the matmul kernels, torch's fused kernel being the default. On an AMD EPYC (26/2/1),
    bigbird-roberta-base at 4096 tokens, a layer's timings were 164 ms joint against 199 ms merged in float32 (the
    whole step 8.6-8.9 s against 9.4-9.8 s), and 157 ms against 82 ms in bfloat16."""
    _, blocks, bs, dim = rows.q.shape
    key = kernels.training_attention_key(heads, dim, blocks, bs, rows.k_other.shape[2] // bs, rows.q.dtype)

    def run(name: str) -> None:
        tracked = {
            f: getattr(rows, f).detach().requires_grad_() for f in ("q", "k_window", "v_window", "k_other", "v_other")
        }
        leaves = rows._replace(**tracked)
        out = _joint(leaves) if name == "joint" else _merged(*_two_parts(leaves, fused=False))
        out.backward(torch.ones_like(out))

    # The timing's own graphs keep their tensors as they are: inside a checkpointed layer's forward they would
    # otherwise go through the checkpoint's hooks, and its recomputation (no timing then) would not match.
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        choice = kernels.choose(key, list(kernels.TRAINING_ATTENTION.candidates), run, kernels.TRAINING_ATTENTION)
    return choice == "joint"


def _gather_blocks(x: torch.Tensor, table: torch.Tensor, bs: int) -> torch.Tensor:
    """(B, H, T, D) and a (H, n-2, slots) block table → each row's key blocks, (B*H, n-2, slots*bs, D).

    One index_select over the (head, block) pairs as a single dimension: in training its backward is an
    index_add of whole blocks, where indexing by two index tensors would accumulate through index_put, about
    five times slower (bigbird-roberta-base at 4096 tokens: 1.0 s of a 13 s step)."""
    b, h, t, d = x.shape
    n = t // bs
    rows, slots = table.shape[1:]
    pairs = (torch.arange(h, device=x.device)[:, None, None] * n + table).flatten()
    picked = x.reshape(b, h * n, bs, d).index_select(1, pairs)  # (B, H*(n-2)*slots, bs, D)
    return picked.view(b * h, rows, slots * bs, d)


def _shared_blocks(x: torch.Tensor, table: torch.Tensor, bs: int) -> torch.Tensor:
    """(B, H, T, D) and a (1, 1, slots) table that every head and row shares → those blocks, (B, H, slots*bs, D)."""
    return x.unflatten(2, (x.shape[2] // bs, bs))[:, :, table[0, 0]].flatten(2, 3)


def _dense_probs(
    global_probs: torch.Tensor, window_probs: torch.Tensor, other_probs: torch.Tensor, table: torch.Tensor, bs: int
) -> torch.Tensor:
    """Lay the sparse probabilities out as a dense (B, H, T, T) matrix (for output_attentions only)."""
    b, h, rows = window_probs.shape[:3]
    n = rows + 2
    dense = global_probs.new_zeros(b, h, n, bs, n, bs)
    dense[:, :, 0] = global_probs[:, :, :bs].view(b, h, bs, n, bs)
    dense[:, :, -1] = global_probs[:, :, bs:].view(b, h, bs, n, bs)
    middle = torch.arange(1, n - 1, device=table.device)
    window_table = (middle[:, None] + torch.arange(-1, 2, device=table.device)).expand(h, rows, 3)

    def write(values: torch.Tensor, blocks: torch.Tensor) -> None:
        slots = blocks.shape[-1]
        index = blocks[None, :, :, None, :, None].expand(b, h, rows, bs, slots, bs)
        dense[:, :, 1:-1].scatter_(4, index, values.unflatten(-1, (slots, bs)))

    # Excluded duplicate slots hold 0: write first/last, then the window, then random, so real values win.
    slots = table.shape[-1]
    write(other_probs.unflatten(-1, (slots, bs))[..., [0, slots - 1], :].flatten(-2), table[..., [0, slots - 1]])
    write(window_probs, window_table)
    if slots > 2:
        write(other_probs[..., bs:-bs], table[..., 1:-1])
    return dense.view(b, h, n * bs, n * bs)


# --------------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Query/key/value projections plus full or block-sparse attention, chosen per call.

    Returns the per-head context merged back to (B, T, hidden); the output projection belongs to the
    family's layer, which differs between BigBird (dense + LayerNorm) and Pegasus (a bare linear).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        bias: bool,
        block_size: int,
        num_random_blocks: int,
        layer_idx: int,
        random_plan: str = "hf",
        max_seq_len: int = 4096,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of the {num_heads} attention heads")
        if random_plan not in ("hf", "seeded"):
            raise ValueError(f"random_plan must be 'hf' or 'seeded', not {random_plan!r}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.block_size = block_size
        self.num_random_blocks = num_random_blocks
        self.layer_idx = layer_idx
        self.random_plan = random_plan
        self.max_seq_len = max_seq_len
        self.dropout = dropout
        self.query = Linear(hidden_size, hidden_size, bias=bias)
        self.key = Linear(hidden_size, hidden_size, bias=bias)
        self.value = Linear(hidden_size, hidden_size, bias=bias)

    @classmethod
    def from_config(cls, config: Any, layer_idx: int) -> Attention:
        """The encoder attention a BigBird or BigBirdPegasus config describes (Pegasus names map by alias)."""
        if config.attention_type not in ATTENTION_TYPES:
            # A typo would otherwise run full attention on every input, silently.
            raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, not {config.attention_type!r}")
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            bias=config.use_bias,
            block_size=config.block_size,
            num_random_blocks=config.num_random_blocks,
            layer_idx=layer_idx,
            random_plan=config.random_plan,
            max_seq_len=config.max_position_embeddings,
            dropout=config.attention_probs_dropout_prob,
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.key(source)), self._heads(self.value(source))

    def plan(self, seq_len: int) -> torch.Tensor:
        """The random-block plan for this layer and length (fresh draws while training)."""
        args = (seq_len, self.block_size, self.num_heads, self.num_random_blocks, self.max_seq_len)
        if self.training:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            return draw_plan(np.random.RandomState(seed), *args)
        if self.random_plan == "seeded":
            return seeded_plan(self.layer_idx, *args)
        return hf_plan(seq_len // self.block_size, self.num_heads, self.num_random_blocks)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        *,
        sparse: bool,
        bias: torch.Tensor | None = None,
        encoder_states: torch.Tensor | None = None,
        cache: Any = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`mask` is the (B, T) token validity; `bias` overrides the full-attention bias (causal, or over
        `encoder_states`).

        With `encoder_states` this is cross-attention: keys and values come from them, always full. A
        `cache` (generation.DecoderCache, decoders only) keeps this layer's keys/values across decoding steps:
        the new tokens' are appended to it; cross-attention's are computed once.
        """
        q = self._heads(self.query(hidden))
        dropout = self.dropout if self.training else 0.0
        if encoder_states is not None and cache is not None:  # `bias` is then the encoder's padding
            project = functools.partial(self._keys_values, encoder_states)
            args = (q, project, bias, dropout, self.key, cache, self.layer_idx, output_attentions)
            context, probs = kept_cross_attention(*args)
            return context.transpose(1, 2).flatten(2), probs
        if encoder_states is None:
            k, v = self._keys_values(hidden)
            if cache is not None and not sparse:
                if bias is None:
                    bias = additive_mask(mask, q.dtype)
                context, probs = cache.self_attend(self.layer_idx, q, k, v, bias, dropout, output_attentions)
                return context.transpose(1, 2).flatten(2), probs
            if cache is not None:  # an encoder config's block-sparse prompt (the cache may hold a wider type)
                k, v = (x.to(q.dtype) for x in cache.append(self.layer_idx, k, v))
        else:
            k, v = self._keys_values(encoder_states)
        if sparse:
            context, probs = block_sparse_attention(
                q, k, v, mask, self.block_size, self.plan(hidden.shape[1]), output_probs=output_attentions
            )
        else:
            if bias is None:
                bias = additive_mask(mask, q.dtype)
            context, probs = full_attention(q, k, v, bias, dropout, output_probs=output_attentions)
        return context.transpose(1, 2).flatten(2), probs


def kept_cross_attention(
    q: torch.Tensor,
    project: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    bias: torch.Tensor | None,
    dropout: float,
    key: Linear,
    cache: Any,
    layer: int,
    output_probs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A decoder layer's cross-attention during generation, for both families: the keys/values `project()` makes
    from the encoder states are made at the first step and kept in the decoder's `cache` (generation.DecoderCache,
    as a cross_attention.CrossKeysValues). `key` is the layer's key projection: an int8 one (linear.quantize_int8)
    lets the kept keys/values go to bfloat16 where the CPU computes it natively."""
    kept = cache.cross_kv(layer, project, key.int8 is not None)
    return kept.attend(q, bias, dropout, output_probs=output_probs)
