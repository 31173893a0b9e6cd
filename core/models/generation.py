"""Text generation for BigBirdPegasus: greedy and beam search, the logits processors, and the decoder's KV cache.

The search follows the reference's `generate` step for step (same scores, same tie-breaking, same stopping rules),
so that both produce the same tokens. What differs is memory: the input is encoded once, and the encoder states and
cross-attention keys/values are held once per input and shared by its beams (the decoder folds the beams of an input
into the query axis of cross-attention). Only the small self-attention cache exists per beam; it is preallocated
for the whole generation and reordered in place when beams are reselected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

# Added to the score of a beam or hypothesis to take it out of the running (the reference's constant).
EXCLUDED = -1.0e9


# --------------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------------
class DecoderCache:
    """Keys/values of the decoder: self-attention per row (growing), cross-attention per input (fixed).

    Self-attention keys/values live in (rows, heads, capacity, head_dim) buffers written in place, allocated once
    when `capacity` is known (generation) and grown by doubling otherwise. Cross-attention keys/values are computed
    from the encoder states on the first step and kept as they are: (inputs, heads, source, head_dim), where
    `inputs` may be fewer than `rows` (beams of one input share them).
    """

    def __init__(self, num_layers: int, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """Tokens already cached (those of the first layer: the others catch up within the same forward)."""
        return self.lengths[0]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' keys/values (rows, heads, new, dim); return views over all cached tokens."""
        start, new = self.lengths[layer], k.shape[2]
        end = start + new
        buffer = self.keys[layer]
        if buffer is None or buffer.shape[2] < end:
            size = max(end, self.capacity or 0, 2 * (buffer.shape[2] if buffer is not None else 0))
            self.keys[layer] = self._grow(buffer, k, size, start)
            self.values[layer] = self._grow(self.values[layer], v, size, start)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        self.lengths[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    @staticmethod
    def _grow(old: torch.Tensor | None, like: torch.Tensor, size: int, used: int) -> torch.Tensor:
        rows, heads, _, dim = like.shape
        buffer = like.new_empty(rows, heads, size, dim)
        if old is not None:
            buffer[:, :, :used] = old[:, :, :used]
        return buffer

    def cross_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.cross[layer]

    def set_cross_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cross[layer] = (k, v)

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i of the self-attention cache becomes old row rows[i] (beam reselection); cross K/V are per input."""
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            if k is None:
                continue
            used = self.lengths[layer]
            k[:, :, :used] = k[rows, :, :used]
            v[:, :, :used] = v[rows, :, :used]


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """One generate call's settings: the call's options over the checkpoint's config (and generation_config.json)."""

    max_length: int
    min_length: int
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    num_return_sequences: int
    no_repeat_ngram_size: int
    repetition_penalty: float
    forced_bos_token_id: int | None
    forced_eos_token_id: int | list[int] | None
    eos_token_id: int | list[int] | None
    pad_token_id: int | None
    decoder_start_token_id: int


OPTIONS = {f.name for f in fields(Settings)} | {"max_new_tokens", "min_new_tokens"}


def resolve_settings(config: Any, options: dict[str, Any]) -> Settings:
    """Options given to generate win; the rest come from the config. Lengths count the decoder start token.

    `max_new_tokens` / `min_new_tokens` take precedence over `max_length` / `min_length`, as in transformers. A
    config's `max_length` is a total length (the Hub's pegasus configs carry one).
    """
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(f"generate() got unknown options: {', '.join(sorted(unknown))}")

    def pick(name: str, default: Any = None) -> Any:
        """The option if given, else the config's value, else `default`."""
        value = options.get(name)
        if value is None:
            value = getattr(config, name, None)
        return default if value is None else value

    prompt = 1  # the decoder starts from its start token alone
    max_new, min_new = pick("max_new_tokens"), pick("min_new_tokens")
    start = pick("decoder_start_token_id", pick("bos_token_id"))
    if start is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) has to be set to generate")
    settings = Settings(
        max_length=max_new + prompt if max_new is not None else pick("max_length"),
        min_length=min_new + prompt if min_new is not None else pick("min_length", 0),
        num_beams=pick("num_beams", 1),
        length_penalty=pick("length_penalty", 1.0),
        early_stopping=pick("early_stopping", False),
        num_return_sequences=pick("num_return_sequences", 1),
        no_repeat_ngram_size=pick("no_repeat_ngram_size", 0),
        repetition_penalty=pick("repetition_penalty", 1.0),
        forced_bos_token_id=pick("forced_bos_token_id"),
        forced_eos_token_id=pick("forced_eos_token_id"),
        eos_token_id=pick("eos_token_id"),
        pad_token_id=pick("pad_token_id"),
        decoder_start_token_id=start,
    )
    if settings.max_length is None or settings.max_length <= prompt:
        raise ValueError(f"max_length must exceed the decoder start ({prompt} token), not {settings.max_length}")
    if settings.num_return_sequences > settings.num_beams:
        raise ValueError(
            f"num_return_sequences ({settings.num_return_sequences}) can't exceed num_beams ({settings.num_beams})"
        )
    if settings.early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', not {settings.early_stopping!r}")
    return settings


def _ids(token: int | list[int] | None, device: torch.device) -> torch.Tensor | None:
    """Token id(s) as a 1-D tensor (eos may be several ids)."""
    if token is None:
        return None
    return torch.tensor([token] if isinstance(token, int) else list(token), dtype=torch.long, device=device)


# --------------------------------------------------------------------------------------------------
# Logits processors: (sequences so far (rows, len), scores (rows, vocab)) → scores
# --------------------------------------------------------------------------------------------------
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repetition_penalty(penalty: float) -> Processor:
    """Make every token already in the sequence less likely: negative scores × penalty, positive ones ÷ penalty."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen = scores.gather(1, ids)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        return scores.scatter(1, ids, seen)

    return apply


def no_repeat_ngram(n: int) -> Processor:
    """Ban each token that would complete an n-gram already present in the sequence."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        if length < n:
            return scores
        prefix = ids[:, length + 1 - n :]  # the last n-1 tokens
        windows = ids.unfold(1, n, 1)  # (rows, length-n+1, n)
        matches = (windows[..., :-1] == prefix[:, None]).all(dim=-1)
        vocab = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
        return scores.masked_fill(banned[:, :vocab], -math.inf)

    return apply


def min_length(length: int, eos: torch.Tensor) -> Processor:
    """No end of sequence before `length` tokens (counting the decoder start)."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] >= length:
            return scores
        return scores.index_fill(1, eos, -math.inf)

    return apply


def force_token(position: int, tokens: torch.Tensor) -> Processor:
    """At sequence length `position`, only `tokens` may come next (forced BOS after the start, EOS at the end)."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] != position:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, tokens] = 0
        return forced

    return apply


def build_processors(s: Settings, eos: torch.Tensor | None, device: torch.device) -> list[Processor]:
    """The processors the settings ask for, in the reference's order (the order matters when several apply)."""
    out: list[Processor] = []
    if s.repetition_penalty != 1.0:
        out.append(repetition_penalty(s.repetition_penalty))
    if s.no_repeat_ngram_size > 0:
        out.append(no_repeat_ngram(s.no_repeat_ngram_size))
    if s.min_length > 0 and eos is not None:
        out.append(min_length(s.min_length, eos))
    if s.forced_bos_token_id is not None:
        out.append(force_token(1, _ids(s.forced_bos_token_id, device)))
    if s.forced_eos_token_id is not None:
        out.append(force_token(s.max_length - 1, _ids(s.forced_eos_token_id, device)))
    return out


def _process(processors: list[Processor], ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    for processor in processors:
        scores = processor(ids, scores)
    return scores


def _stops(seqs: torch.Tensor, max_length: int, eos: torch.Tensor | None) -> torch.Tensor:
    """Per row: is the sequence complete (maximum length reached, or its last token ends a sequence)?"""
    done = torch.full((seqs.shape[0],), seqs.shape[1] >= max_length, dtype=torch.bool, device=seqs.device)
    if eos is not None:
        done = done | torch.isin(seqs[:, -1], eos)
    return done


# --------------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any):
    """Summaries of a (batch, source) input as token ids: (batch * num_return_sequences, length).

    `model` is a BigBirdPegasusForConditionalGeneration. Without `attention_mask` every input token is attended
    (padding included), as transformers does for encoder-decoder models. Finished rows are padded after their end.
    """
    s = resolve_settings(model.config, options)
    device = input_ids.device
    eos = _ids(s.eos_token_id, device)
    pad = s.pad_token_id if s.pad_token_id is not None else (int(eos[0]) if eos is not None else None)
    processors = build_processors(s, eos, device)

    encoded = model.model.encoder(input_ids, attention_mask).last_hidden_state
    cache = DecoderCache(len(model.model.decoder.layers), capacity=s.max_length)

    def next_scores(tokens: torch.Tensor) -> torch.Tensor:
        """Float32 logits for the next token after `tokens` (rows, 1): one decoder step on the cache."""
        out = model(
            attention_mask=attention_mask,
            encoder_outputs=(encoded,),
            decoder_input_ids=tokens,
            past_key_values=cache,
            use_cache=True,
        )
        return out.logits[:, -1].float()

    if s.num_beams == 1:
        return _greedy(next_scores, input_ids.shape[0], s, eos, pad, processors, device)
    return _beam_search(next_scores, cache, input_ids.shape[0], s, eos, pad, processors, device)


def _greedy(
    next_scores: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    s: Settings,
    eos: torch.Tensor | None,
    pad: int | None,
    processors: list[Processor],
    device: torch.device,
) -> torch.Tensor:
    """Most likely token each step; a finished row gets padding until every row is finished or max_length."""
    seqs = torch.full((batch, 1), s.decoder_start_token_id, dtype=torch.long, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    while True:
        scores = _process(processors, seqs, next_scores(seqs[:, -1:]))
        tokens = scores.argmax(dim=-1)
        if eos is not None:
            tokens = torch.where(unfinished, tokens, pad)
        seqs = torch.cat([seqs, tokens[:, None]], dim=1)
        unfinished = unfinished & ~_stops(seqs, s.max_length, eos)
        if not unfinished.any():
            return seqs


def _beam_search(
    next_scores: Callable[[torch.Tensor], torch.Tensor],
    cache: DecoderCache,
    batch: int,
    s: Settings,
    eos: torch.Tensor | None,
    pad: int | None,
    processors: list[Processor],
    device: torch.device,
) -> torch.Tensor:
    """Beam search as the reference runs it (vectorized over the batch).

    Each step keeps the `keep` best continuations over all beams of an input (twice the beams, so that enough of
    them go on when some end). Those that end and rank among the first `num_beams` become hypotheses scored
    sum(log p) / (generated tokens ** length_penalty); the best `num_beams` hypotheses are kept. The best
    not-ended continuations are the next beams. An input is done when no running beam can beat its worst kept
    hypothesis (how that is estimated depends on `early_stopping`), or, with early_stopping=True, as soon as it has
    `num_beams` hypotheses.
    """
    beams, lp, early = s.num_beams, s.length_penalty, s.early_stopping
    prompt = 1
    keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * beams
    among_top = torch.arange(keep, device=device) < beams
    # Unused positions hold the pad token, or eos when pad is 0 (the reference's `pad or eos` fallback).
    fill = (pad or int(eos[0])) if eos is not None else -1

    running = torch.full((batch, beams, s.max_length), fill, dtype=torch.long, device=device)
    running[:, :, 0] = s.decoder_start_token_id
    running_scores = torch.zeros(batch, beams, device=device)
    running_scores[:, 1:] = EXCLUDED  # all beams start equal: let only the first one expand at first
    hyps = running.clone()
    hyp_scores = torch.full((batch, beams), EXCLUDED, device=device)
    hyp_lengths = torch.zeros(batch, beams, dtype=torch.long, device=device)
    hyp_done = torch.zeros(batch, beams, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    offsets = torch.arange(batch, device=device)[:, None] * beams

    cur = prompt
    while True:
        flat = running[:, :, :cur].reshape(batch * beams, cur)
        log_probs = _process(processors, flat, F.log_softmax(next_scores(flat[:, -1:]), dim=-1))
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, beams, vocab) + running_scores[:, :, None]).view(batch, beams * vocab)

        # Best `keep` continuations over all beams of each input.
        top_scores, top = torch.topk(totals, keep)
        parent = top // vocab
        top_seqs = running.gather(1, parent[:, :, None].expand(-1, -1, s.max_length)).clone()
        top_seqs[:, :, cur] = top % vocab
        ended = _stops(top_seqs[:, :, : cur + 1].reshape(batch * keep, cur + 1), s.max_length, eos).view(batch, keep)

        # The next beams: the best continuations that did not end.
        open_scores = top_scores + ended.float() * EXCLUDED
        chosen = torch.topk(open_scores, beams)[1]
        running = top_seqs.gather(1, chosen[:, :, None].expand(-1, -1, s.max_length))
        running_scores = open_scores.gather(1, chosen)
        cache.reorder((parent.gather(1, chosen) + offsets).flatten())

        # Hypotheses: merge the new ended ones (length-penalized) with those kept so far, keep the best.
        new_scores = top_scores / ((cur + 1 - prompt) ** lp)
        full = hyp_done.all(dim=-1, keepdim=True) & (early is True)
        new_scores += full.float() * EXCLUDED
        new_scores += (~improvable).float() * EXCLUDED
        new_done = ended & among_top[None, :]
        new_scores += (~new_done) * EXCLUDED
        merged_scores = torch.cat([hyp_scores, new_scores], dim=1)
        best = torch.topk(merged_scores, beams)[1]
        hyps = torch.cat([hyps, top_seqs], dim=1).gather(1, best[:, :, None].expand(-1, -1, s.max_length))
        hyp_scores = merged_scores.gather(1, best)
        new_lengths = torch.full_like(new_done, cur + 1 - prompt, dtype=torch.long)
        hyp_lengths = torch.cat([hyp_lengths, new_lengths], dim=1).gather(1, best)
        hyp_done = torch.cat([hyp_done, new_done], dim=1).gather(1, best)

        cur += 1
        improvable = improvable & _can_improve(running_scores, hyp_scores, hyp_done, cur, s.max_length, prompt, s)
        all_full = bool(hyp_done.all()) and early is True
        if not improvable.any() or all_full or bool(ended.all()):
            break

    n = s.num_return_sequences
    length = prompt + int(hyp_lengths[:, :n].max())
    return hyps[:, :n, :length].reshape(batch * n, length)


def _can_improve(
    running_scores: torch.Tensor,
    hyp_scores: torch.Tensor,
    hyp_done: torch.Tensor,
    cur: int,
    max_length: int,
    prompt: int,
    s: Settings,
) -> torch.Tensor:
    """Could the best running beam still beat the worst kept hypothesis? (batch, 1)

    The best beam's score is length-penalized at the current length, or at max_length with early_stopping="never"
    and a positive length penalty (longer is then better): the reference's heuristic.
    """
    if s.early_stopping == "never" and s.length_penalty > 0.0:
        best_length = max_length - prompt
    else:
        best_length = cur - prompt
    best_running = running_scores[:, :1] / (best_length**s.length_penalty)
    worst_kept = torch.where(hyp_done, hyp_scores.min(dim=1, keepdim=True)[0], EXCLUDED)
    return (best_running > worst_kept).any(dim=-1, keepdim=True)
