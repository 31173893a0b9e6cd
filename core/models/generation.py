"""Text generation for BigBirdPegasus and BigBirdForCausalLM: greedy search, sampling, beam search and beam
sampling, the logits processors and sampling warpers, and the decoders' KV cache.

The search follows the reference's `generate` step for step (same scores, same tie-breaking, same stopping rules,
processors and warpers in the same order, the same multinomial draws from torch's generator), so that both produce
the same tokens, under the same `torch.manual_seed` when sampling. Settings are merged once, in
`resolve_generation_settings`. What differs is memory: the input is encoded once, and the encoder states and
cross-attention keys/values are held once per input and shared by its beams (the decoder folds the beams of an input
into the query axis of cross-attention). Only the small self-attention cache exists per beam; it is preallocated
for the whole generation and reordered in place when beams are reselected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from .attention import full_attention
from .config import GENERATION_DEFAULTS, SAMPLING_DEFAULTS
from .cross_attention import CrossKeysValues
from .heap import release_free_heap
from .linear import rows_per_input

# Added to the score of a beam or hypothesis to take it out of the running (the reference's constant).
EXCLUDED = -1.0e9
# A decoding step wants the logits only, whatever the config asks forward calls to return.
STEP_OUTPUTS = {"return_dict": True, "output_hidden_states": False, "output_attentions": False}


# --------------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------------
class DecoderCache:
    """Keys/values of the decoder: self-attention per row (growing), cross-attention per input (fixed).

    Self-attention keys/values live in (rows, heads, capacity, head_dim) buffers written in place, allocated once
    when `capacity` is known (generation) and grown by doubling otherwise. Cross-attention keys/values are computed
    from the encoder states on the first step and kept, head-major: (inputs, heads, source, head_dim), where
    `inputs` may be fewer than `rows` (beams of one input share them).

    A bfloat16 or float16 model's self-attention keys/values are held in float32 on the CPU (`held_dtype`), and
    its decoding steps attend in float32: torch's CPU attention takes 5-8 times as long in those types at a
    decoding step's shapes (5 beams, 16 heads, one query against 128 cached tokens: 462 us in bfloat16, 786 us in
    float16, 60 us in float32; AMD EPYC 26/2/1), which made self-attention the largest part of a bfloat16 step
    by the end of a summary. Widening is exact, so the cache holds the same numbers; the softmax and the sum over
    values then round once, in float32, rather than in the model's type. It costs twice the memory of the
    model's type (pegasus-large, 8 inputs of 5 beams, 256 positions: 640 against 320 MiB), beside the cross-
    attention keys/values, which stay in the model's type.
    """

    def __init__(self, num_layers: int, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers
        self.cross: list[CrossKeysValues | None] = [None] * num_layers
        # Which row computed each cached position of each row, (rows, length): see `reorder`.
        self.lineage: torch.Tensor | None = None

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
        if layer == 0:  # every layer caches the same positions: the first one records who computed them
            rows = torch.arange(k.shape[0], device=k.device)[:, None].expand(-1, new)
            kept = self.lineage[:, :start] if self.lineage is not None else rows[:, :0]
            self.lineage = torch.cat([kept, rows], dim=1)
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def positions(self, new: int, device: torch.device) -> torch.Tensor:
        """The positions of the next `new` tokens: (new,), the same for every row."""
        return torch.arange(self.length, self.length + new, device=device)

    def self_attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        dropout: float = 0.0,
        output_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention of the new tokens' queries to every cached token, after caching the new keys/values."""
        k, v = self.append(layer, k, v)
        if k.dtype == q.dtype:
            return full_attention(q, k, v, bias, dropout, output_probs=output_probs)
        wide = None if bias is None else bias.to(k.dtype)
        context, probs = full_attention(q.to(k.dtype), k, v, wide, dropout, output_probs=output_probs)
        return context.to(q.dtype), None if probs is None else probs.to(q.dtype)

    def crop(self, length: int) -> None:
        """Forget every cached token from `length` on (a block-sparse pass appends its padding to the block size)."""
        self.lengths = [min(used, length) for used in self.lengths]
        if self.lineage is not None:
            self.lineage = self.lineage[:, :length]

    @staticmethod
    def _grow(old: torch.Tensor | None, like: torch.Tensor, size: int, used: int) -> torch.Tensor:
        rows, heads, _, dim = like.shape
        buffer = like.new_empty(rows, heads, size, dim, dtype=held_dtype(like))
        if old is not None:
            buffer[:, :, :used] = old[:, :, :used]
        return buffer

    def cross_kv(
        self, layer: int, project: Callable[[], tuple[torch.Tensor, torch.Tensor]], approximate: bool = False
    ) -> CrossKeysValues:
        """This layer's cross-attention keys/values: `project()` from the encoder states at the first step, then kept
        (in the layout their first attention chooses, in bfloat16 for an `approximate` (int8) model where the CPU
        has it: see cross_attention.CrossKeysValues)."""
        if self.cross[layer] is None:
            self.cross[layer] = CrossKeysValues(*project(), reused=True, approximate=approximate)
        return self.cross[layer]

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i of the self-attention cache becomes old row rows[i] (beam reselection); cross K/V are per input.

        Only the positions from the first where some row and its new source differ are copied. Beams share most of
        their past (pegasus-large, random weights, 5 beams, 100 new tokens: 2% of the positions lie past that
        point), and a position whose keys/values one row computed holds those same numbers, bit for bit, in every
        row that has it by copy. `lineage` says which row computed each position of each row and moves with the
        rows, so equal lineage up to a position means equal contents there, without reading them; two rows that
        computed the same token apart (the first step's identical beams) count as different. The window past that
        point is gathered and written back in place: two passes over it. Where it is most of the cache (beams that
        parted early), the rows are instead selected whole into a new buffer that takes the old one's place, one
        pass (beam search reorders every step: a whole-cache copy was pegasus-large's largest cost of a step
        outside the model, 4.9 ms at 128 tokens); the old buffer goes back to the heap, where the next one reuses it.
        """
        if self.lineage is None:
            return
        source = self.lineage.index_select(0, rows)
        differs = (source != self.lineage).any(dim=0).nonzero()
        self.lineage = source
        if not len(differs):
            return
        start = int(differs[0])
        whole = 2 * start <= self.length
        for layer, used in enumerate(self.lengths):
            for buffers in (self.keys, self.values):
                buffer = buffers[layer]
                if buffer is None or used <= start:
                    continue
                if whole:
                    buffers[layer] = torch.empty_like(buffer)
                    torch.index_select(buffer[:, :, :used], 0, rows, out=buffers[layer][:, :, :used])
                else:
                    window = buffer[:, :, start:used]
                    window.copy_(window.index_select(0, rows))


def held_dtype(keys: torch.Tensor) -> torch.dtype:
    """The type a DecoderCache holds self-attention keys/values like `keys` in: float32 for bfloat16 and float16 ones
    on the CPU (see DecoderCache), their own type elsewhere."""
    if keys.device.type == "cpu" and keys.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return keys.dtype


class RaggedCache:
    """The caches of several inputs decoded in one batch (continuous batching): each input keeps its own
    DecoderCache (its own length, its own cross-attention keys/values, made at its first step, taken alone), and
    its `group` rows are consecutive in the batch.

    Attention runs input by input, each exactly the call the input makes alone, so inputs of different source
    and summary lengths share a batch without padding; everything between the attentions (norms, projections,
    feed-forward, the LM head) runs over all rows at once, where the weights are read once for every input.
    Steps feed one new token per row, without a decoder mask.
    """

    def __init__(self, caches: list[DecoderCache], group: int) -> None:
        self.caches, self.group = caches, group

    @property
    def length(self) -> int:
        """The most tokens any input has cached (a single-token step without a mask needs no causal bias)."""
        return max(cache.length for cache in self.caches)

    def positions(self, new: int, device: torch.device) -> torch.Tensor:
        """Each row's next position: (rows, 1), each input at its own length."""
        if new != 1:
            raise ValueError(f"a ragged decoding step takes one new token per row, not {new}")
        lengths = torch.tensor([cache.length for cache in self.caches], device=device)
        return lengths.repeat_interleave(self.group)[:, None]

    def self_attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        dropout: float = 0.0,
        output_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if bias is not None or output_probs:
            raise ValueError("a ragged decoding step runs without a decoder mask or attention probabilities")
        parts = zip(self.caches, q.split(self.group), k.split(self.group), v.split(self.group), strict=True)
        return torch.cat([cache.self_attend(layer, *qkv, None, dropout)[0] for cache, *qkv in parts]), None

    def cross_kv(self, layer: int, project: Callable[[], Any], approximate: bool = False) -> RaggedCross:
        """Each input's cross-attention keys/values of this layer (made at its first step)."""
        kept = [cache.cross[layer] for cache in self.caches]
        if any(kv is None for kv in kept):
            raise ValueError("a ragged decoding step needs every input's cross-attention keys/values made first")
        return RaggedCross(kept, self.group)  # type: ignore[arg-type]


class RaggedCross:
    """Cross-attention of several inputs' rows, each input to its own keys/values (see RaggedCache)."""

    def __init__(self, kept: list[CrossKeysValues], group: int) -> None:
        self.kept, self.group = kept, group

    def attend(
        self, q: torch.Tensor, bias: torch.Tensor | None, dropout: float = 0.0, output_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if bias is not None or output_probs:
            raise ValueError("a ragged decoding step attends unpadded inputs, without attention probabilities")
        parts = zip(self.kept, q.split(self.group), strict=True)
        return torch.cat([kv.attend(part, None, dropout)[0] for kv, part in parts]), None


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------
@dataclass
class GenerationSettings:
    """One generate call's settings, resolved once: the call's options over the checkpoint's config (which holds
    generation_config.json's values: `config.apply_generation_config`) over the reference's defaults."""

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
    decoder_start_token_id: int | None
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float

    @property
    def rows_per_input(self) -> int:
        """Decoder rows each input grows into: its beams, or its samples."""
        return max(self.num_beams, self.num_return_sequences)


# Options of our own: one torch.Generator per input row, so that each input's draws do not depend on the
# other rows of its batch (the CLI seeds one per document).
OWN_OPTIONS = {"generators"}
OPTIONS = {f.name for f in fields(GenerationSettings)} | {"max_new_tokens", "min_new_tokens"} | OWN_OPTIONS


def resolve_generation_settings(config: Any, options: dict[str, Any], prompt_length: int = 1) -> GenerationSettings:
    """The one place generation settings are merged: options given to generate, else the config's value, else
    the reference's default. Lengths count the prompt (`prompt_length` tokens: the decoder start token of an
    encoder-decoder, the input of a decoder-only model).

    `max_new_tokens` / `min_new_tokens` take precedence over `max_length` / `min_length`, as in transformers. A
    config's `max_length` is a total length (the Hub's pegasus configs carry one).
    """
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(
            f"generate() got unknown options: {', '.join(sorted(unknown))}; it takes {', '.join(sorted(OPTIONS))}"
        )
    defaults = {**GENERATION_DEFAULTS, **SAMPLING_DEFAULTS}

    def pick(name: str, default: Any = None) -> Any:
        """The option if given, else the config's value, else the reference's default (or `default`)."""
        value = options.get(name)
        if value is None:
            value = getattr(config, name, None)
        if value is None:
            value = defaults.get(name, default)
        return value

    max_new, min_new = options.get("max_new_tokens"), options.get("min_new_tokens")
    settings = GenerationSettings(
        max_length=max_new + prompt_length if max_new is not None else pick("max_length"),
        min_length=min_new + prompt_length if min_new is not None else pick("min_length"),
        num_beams=pick("num_beams"),
        length_penalty=pick("length_penalty"),
        early_stopping=pick("early_stopping"),
        num_return_sequences=pick("num_return_sequences"),
        no_repeat_ngram_size=pick("no_repeat_ngram_size"),
        repetition_penalty=float(pick("repetition_penalty")),
        forced_bos_token_id=pick("forced_bos_token_id"),
        forced_eos_token_id=pick("forced_eos_token_id"),
        eos_token_id=pick("eos_token_id"),
        pad_token_id=pick("pad_token_id"),
        decoder_start_token_id=pick("decoder_start_token_id", pick("bos_token_id")),
        do_sample=bool(pick("do_sample")),
        temperature=float(pick("temperature")),
        top_k=int(pick("top_k")),
        top_p=float(pick("top_p")),
    )
    if max_new is not None and max_new < 1:  # named as given: max_length is made of it
        raise ValueError(f"max_new_tokens must be at least 1, not {max_new}")
    _check(settings, prompt_length)
    return settings


def _check(settings: GenerationSettings, prompt_length: int) -> None:
    """Refuse settings the search can't honour, with the reason (ValueError)."""
    if settings.max_length is None or settings.max_length <= prompt_length:
        raise ValueError(f"max_length must exceed the prompt ({prompt_length} tokens), not {settings.max_length}")
    if settings.num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, not {settings.num_beams}")
    if settings.num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be at least 1, not {settings.num_return_sequences}")
    if settings.num_beams > 1 and settings.num_return_sequences > settings.num_beams:
        raise ValueError(
            f"num_return_sequences ({settings.num_return_sequences}) can't exceed num_beams ({settings.num_beams})"
        )
    if settings.num_beams == 1 and settings.num_return_sequences > 1 and not settings.do_sample:
        raise ValueError(
            f"num_return_sequences ({settings.num_return_sequences}) needs do_sample=True or num_beams >= it: "
            "greedy search gives one sequence"
        )
    if settings.early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', not {settings.early_stopping!r}")
    if not settings.repetition_penalty > 0:  # NaN too
        raise ValueError(f"repetition_penalty must be positive, not {settings.repetition_penalty}")
    if settings.do_sample:
        if not settings.temperature > 0:  # NaN too
            raise ValueError(
                f"temperature must be positive, not {settings.temperature} (for greedy search leave do_sample off)"
            )
        if settings.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, not {settings.top_k}")
        if not 0.0 <= settings.top_p <= 1.0:
            raise ValueError(f"top_p must be between 0 and 1, not {settings.top_p}")


def _ids(token: int | list[int] | None, device: torch.device) -> torch.Tensor | None:
    """Token id(s) as a 1-D tensor (eos may be several ids)."""
    if token is None:
        return None
    return torch.tensor([token] if isinstance(token, int) else list(token), dtype=torch.long, device=device)


# --------------------------------------------------------------------------------------------------
# Logits processors: (sequences so far (rows, len), scores (rows, vocab)) → scores
# --------------------------------------------------------------------------------------------------
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repetition_penalty(penalty: float, skip: torch.Tensor | None = None) -> Processor:
    """Make every token already in the sequence less likely: negative scores × penalty, positive ones ÷ penalty.

    `skip[row]` leading positions of a row (left padding of a decoder-only prompt) are not counted as seen.
    """

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        if skip is not None:
            positions = torch.arange(ids.shape[1], device=ids.device)
            ids = ids.masked_fill(positions[None, :] < skip[:, None], vocab)
        seen = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        seen.scatter_(1, ids.clamp(max=vocab), True)
        seen = seen[:, :vocab]
        return torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)

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


def temperature(value: float) -> Processor:
    """Flatten (above 1) or sharpen (below 1) the distribution."""
    return lambda ids, scores: scores / value


def top_k(k: int, keep_at_least: int) -> Processor:
    """Only the k best tokens (ties with the k-th included) stay candidates."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        kth = torch.topk(scores, min(max(k, keep_at_least), scores.shape[-1]))[0][:, -1:]
        return scores.masked_fill(scores < kth, -math.inf)

    return apply


def top_p(p: float, keep_at_least: int) -> Processor:
    """Nucleus: the fewest best tokens whose probabilities sum to at least p stay candidates.

    Tokens are sorted from least to most likely and dropped while the mass of those dropped stays within 1 - p;
    sorting the same way as the reference keeps ties on the same side of the cut.
    """

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ascending, order = torch.sort(scores, descending=False)
        dropped = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - p)
        dropped[:, -keep_at_least:] = False
        return scores.masked_fill(dropped.scatter(1, order, dropped), -math.inf)

    return apply


def build_processors(
    settings: GenerationSettings, eos: torch.Tensor | None, device: torch.device, skip: torch.Tensor | None = None
) -> list[Processor]:
    """The processors, then the sampling warpers, the settings ask for, in the reference's order (the order
    matters when several apply). `skip`: per row, leading prompt positions the repetition penalty ignores."""
    out: list[Processor] = []
    if settings.repetition_penalty != 1.0:
        out.append(repetition_penalty(settings.repetition_penalty, skip))
    if settings.no_repeat_ngram_size > 0:
        out.append(no_repeat_ngram(settings.no_repeat_ngram_size))
    if settings.min_length > 0 and eos is not None:
        out.append(min_length(settings.min_length, eos))
    if settings.forced_bos_token_id is not None:
        out.append(force_token(1, _ids(settings.forced_bos_token_id, device)))
    if settings.forced_eos_token_id is not None:
        out.append(force_token(settings.max_length - 1, _ids(settings.forced_eos_token_id, device)))
    if settings.do_sample:
        # Beam sampling keeps enough candidates for the beams to go on when some end (the reference's floor).
        keep_at_least = (1 + (eos.shape[0] if eos is not None else 1)) if settings.num_beams > 1 else 1
        if settings.temperature != 1.0:
            out.append(temperature(settings.temperature))
        if settings.top_k != 0:
            out.append(top_k(settings.top_k, keep_at_least))
        if settings.top_p < 1.0:
            out.append(top_p(settings.top_p, keep_at_least))
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
NextScores = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any):
    """Summaries of a (batch, source) input as token ids: (batch * num_return_sequences, length).

    `model` is a BigBirdPegasusForConditionalGeneration. Without `attention_mask` every input token is attended
    (padding included), as transformers does for encoder-decoder models. Finished rows are padded after their end.
    """
    settings = resolve_generation_settings(model.config, options)
    if settings.decoder_start_token_id is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) has to be set to generate")
    encoded = model.model.encoder(input_ids, attention_mask).last_hidden_state
    release_free_heap()  # the encoder's scratch, before the cache's long-lived keys/values are allocated
    cache = DecoderCache(len(model.model.decoder.layers), capacity=settings.max_length)
    start = input_ids.new_full((input_ids.shape[0], 1), settings.decoder_start_token_id)
    next_scores = _conditional_step(model, cache, encoded, attention_mask)
    return search(next_scores, cache, start, settings, options.get("generators"))


def _conditional_step(
    model: Any, cache: DecoderCache | RaggedCache, encoded: Any, attention_mask: torch.Tensor | None
) -> NextScores:
    """Float32 logits for the token after each row of `seqs`: one decoder step over the uncached tokens."""

    def next_scores(seqs: torch.Tensor) -> torch.Tensor:
        out = model(
            attention_mask=attention_mask,
            encoder_outputs=(encoded,),
            decoder_input_ids=seqs[:, cache.length :] if isinstance(cache, DecoderCache) else seqs[:, -1:],
            past_key_values=cache,
            use_cache=True,
            **STEP_OUTPUTS,
        )
        return out.logits[:, -1].float()

    return next_scores


@dataclass
class _InFlight:
    """One input being decoded in a continuous batch: its place in the inputs, search, cache and encoder states,
    and the seconds it has taken so far (see generate_each)."""

    index: int
    search: _Sampling | _BeamSearch
    cache: DecoderCache
    encoded: torch.Tensor
    seconds: float


@torch.no_grad()
def generate_each(
    model: Any,
    inputs: Iterable[tuple[torch.Tensor, list[torch.Generator] | None] | None],
    size: int,
    **options: Any,
) -> Iterator[tuple[int, torch.Tensor, float]]:
    """Summaries of many unpadded (1, source) inputs, each exactly what `generate` gives it alone, decoding the
    beams of up to `size` inputs in one batch: `(index, ids, seconds)` as inputs finish, ids as `generate`'s.

    Each input comes with its generators (or None) and is encoded alone, and its first step runs alone (that makes
    its cross-attention keys/values as `generate` does); then it joins the batch, whose every step scores the next
    token of all inputs in flight (a `RaggedCache`: attention input by input, every other layer over all rows,
    `linear.rows_per_input` keeping each input's rows the bits they are alone). An input that finishes leaves at
    once and a waiting one takes its place (continuous batching), so memory holds the keys/values of at most
    `size` inputs. Inputs are read lazily, and `inputs` may yield None for "none ready until an input in flight
    finishes" (a caller whose next inputs are made of finished ones' results: summaries of summaries); `index`
    counts the inputs given, Nones left out.

    `seconds` is the input's share of the wall time: reading it from `inputs`, its encoding and first step, and an
    equal share of each batched step it rode in. The shares add up to the call's time, less what the caller does
    while an item is yielded, so an input's cost can be told apart from its batch-mates' (a finish time would give
    inputs finishing in the same step nothing, and the first to finish everything before it).
    """
    settings = resolve_generation_settings(model.config, options)
    if settings.decoder_start_token_id is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) has to be set to generate")
    eos = _ids(settings.eos_token_id, model.device)
    processors = build_processors(settings, eos, model.device)
    group = settings.rows_per_input
    waiting = iter(inputs)
    given = 0
    exhausted = False
    flying: list[_InFlight] = []
    while True:
        while len(flying) < size and not exhausted:
            started = time.perf_counter()
            item = next(waiting, _END)
            if item is _END:
                exhausted = True
                break
            if item is None:
                if not flying:
                    raise ValueError("generate_each: the inputs are waiting on inputs in flight, and none are")
                break
            input_ids, generators = item
            index, given = given, given + 1
            if input_ids.shape[0] != 1:
                raise ValueError(f"generate_each takes inputs of one row, not {input_ids.shape[0]}")
            encoded = model.model.encoder(input_ids).last_hidden_state
            release_free_heap()
            cache = DecoderCache(len(model.model.decoder.layers), capacity=settings.max_length)
            start = input_ids.new_full((1, 1), settings.decoder_start_token_id)
            search = _start_search(start, settings, processors, generators)
            _advance(search, cache, _conditional_step(model, cache, encoded, None)(search.rows()))
            # The first step's scratch (keys/values projected, then copied into oneDNN's layout) is left in the
            # heap while it runs, where the next layer's scratch reuses it, and handed back here. Handed back
            # layer by layer instead, every layer faulted its scratch in afresh: the first steps of 8 documents
            # of 1,500-4,000 tokens took 6.6-6.8 s against 5.4-5.9 s (AMD EPYC 26/2/1), which bought a peak
            # 333 MiB lower at batch 8 and no lower at batch 1 (4,096 tokens: the encoder's peak is higher).
            release_free_heap()
            alone = _InFlight(index, search, cache, encoded, time.perf_counter() - started)
            if search.done:
                yield index, search.result(), alone.seconds
            else:
                flying.append(alone)
        if not flying:  # nothing in flight once the filling stops: the inputs are all done
            return
        started = time.perf_counter()
        ragged = RaggedCache([f.cache for f in flying], group)
        rows = torch.cat([f.search.rows()[:, -1:] for f in flying])
        with rows_per_input(group):
            logits = _conditional_step(model, ragged, [f.encoded for f in flying], None)(rows)
        for f, part in zip(flying, logits.split(group), strict=True):
            _advance(f.search, f.cache, part)
        share = (time.perf_counter() - started) / len(flying)
        for f in flying:
            f.seconds += share
            if f.search.done:
                yield f.index, f.search.result(), f.seconds
        flying = [f for f in flying if not f.search.done]


_END = object()  # generate_each's inputs have no more


def _advance(search: _Sampling | _BeamSearch, cache: DecoderCache, logits: torch.Tensor) -> None:
    order = search.advance(logits)
    if order is not None:
        cache.reorder(order)


@torch.no_grad()
def generate_causal(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any):
    """Continuations of a (batch, prompt) input as token ids, prompt included: (batch * num_return_sequences, length).

    `model` is a decoder-only LM taking `input_ids, attention_mask, position_ids, past_key_values, use_cache`.
    Without `attention_mask`, pad tokens are masked when the pad id is no eos id (as the reference infers it);
    positions count attended tokens only, so left-padded prompts continue as if unpadded.
    """
    prompt = input_ids.shape[1]
    settings = resolve_generation_settings(model.config, options, prompt_length=prompt)
    if attention_mask is None:
        attention_mask = _inferred_mask(input_ids, settings)
    group = settings.rows_per_input
    rows_mask = attention_mask.long().repeat_interleave(group, dim=0)
    cache = DecoderCache(model.num_cache_layers, capacity=settings.max_length)
    skip = rows_mask.argmax(dim=1) if settings.repetition_penalty != 1.0 else None

    # Every step's mask and positions are prefixes of these: generated tokens are always attended.
    full_mask = F.pad(rows_mask, (0, max(settings.max_length, prompt) - prompt), value=1)
    full_positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 0)

    def next_scores(seqs: torch.Tensor) -> torch.Tensor:
        past, length = cache.length, seqs.shape[1]
        out = model(
            seqs[:, past:],
            attention_mask=full_mask[:, :length],
            position_ids=full_positions[:, past:length],
            past_key_values=cache,
            use_cache=True,
            **STEP_OUTPUTS,
        )
        return out.logits[:, -1].float()

    return search(next_scores, cache, input_ids, settings, options.get("generators"), skip=skip)


def _inferred_mask(input_ids: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    pad, eos = settings.pad_token_id, settings.eos_token_id
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if pad is None or pad in eos_ids or not bool((input_ids == pad).any()):
        return torch.ones_like(input_ids)
    return (input_ids != pad).long()


def search(
    next_scores: NextScores,
    cache: DecoderCache,
    prompt: torch.Tensor,
    settings: GenerationSettings,
    generators: list[torch.Generator] | None = None,
    skip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy search, sampling, beam search or beam sampling from a (batch, prompt) start, as the settings say.

    `generators`: one per input row; each input then draws from its own generator only (see `_draw`), so its
    tokens do not depend on which other inputs share the batch. Without them, draws come from torch's global
    generator in the reference's order.
    """
    device = prompt.device
    if generators is not None and len(generators) != prompt.shape[0]:
        raise ValueError(f"generators: {len(generators)} given for {prompt.shape[0]} input rows")
    processors = build_processors(settings, _ids(settings.eos_token_id, device), device, skip)
    search = _start_search(prompt, settings, processors, generators)
    if not search.done:
        _advance(search, cache, next_scores(search.rows()))
        release_free_heap()  # the first step's scratch, once it is done (as generate_each hands it back)
    while not search.done:
        _advance(search, cache, next_scores(search.rows()))
    return search.result()


def _start_search(
    prompt: torch.Tensor,
    settings: GenerationSettings,
    processors: list[Processor],
    generators: list[torch.Generator] | None,
) -> _Sampling | _BeamSearch:
    """The search the settings ask for, from a (batch, prompt) start, before its first step."""
    eos = _ids(settings.eos_token_id, prompt.device)
    pad = settings.pad_token_id if settings.pad_token_id is not None else (int(eos[0]) if eos is not None else None)
    if settings.num_beams == 1:
        rows = prompt.repeat_interleave(settings.rows_per_input, dim=0)
        return _Sampling(rows, settings, eos, pad, processors, generators)
    return _BeamSearch(prompt, settings, eos, pad, processors, generators)


def _draw(probs: torch.Tensor, samples: int, generators: list[torch.Generator] | None) -> torch.Tensor:
    """`samples` draws without replacement per row of `probs`, in one call (torch's global generator, as the
    reference), or one call per input with its own generator (the rows of an input are consecutive)."""
    if generators is None:
        return torch.multinomial(probs, samples)
    per_input = probs.shape[0] // len(generators)
    parts = probs.split(per_input)
    return torch.cat([torch.multinomial(part, samples, generator=g) for part, g in zip(parts, generators, strict=True)])


class _Sampling:
    """Greedy search or sampling, one step at a time: the most likely (or a sampled) token each step; a finished
    row gets padding until every row is finished."""

    def __init__(
        self,
        seqs: torch.Tensor,
        settings: GenerationSettings,
        eos: torch.Tensor | None,
        pad: int | None,
        processors: list[Processor],
        generators: list[torch.Generator] | None,
    ) -> None:
        self.seqs, self.settings, self.eos, self.pad = seqs, settings, eos, pad
        self.processors, self.generators = processors, generators
        self.unfinished = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
        self.done = False

    def rows(self) -> torch.Tensor:
        """The sequences whose next token the next step scores."""
        return self.seqs

    def advance(self, logits: torch.Tensor) -> None:
        """Take one step on the logits of `rows()`; no cache reordering is needed."""
        scores = _process(self.processors, self.seqs, logits)
        if self.settings.do_sample:
            tokens = _draw(scores.softmax(dim=-1), 1, self.generators)[:, 0]
        else:
            tokens = scores.argmax(dim=-1)
        if self.eos is not None:
            tokens = torch.where(self.unfinished, tokens, self.pad)
        self.seqs = torch.cat([self.seqs, tokens[:, None]], dim=1)
        self.unfinished = self.unfinished & ~_stops(self.seqs, self.settings.max_length, self.eos)
        self.done = not bool(self.unfinished.any())

    def result(self) -> torch.Tensor:
        return self.seqs


class _BeamSearch:
    """Beam search (or beam sampling) as the reference runs it, vectorized over the batch, one step at a time.

    Each step keeps `keep` continuations over all beams of an input (twice the beams, so that enough of them go
    on when some end): the best ones, or, when sampling, `keep` drawn without replacement in proportion to their
    accumulated probabilities. Those that end and rank among the first `num_beams` become hypotheses scored
    sum(log p) / (generated tokens ** length_penalty); the best `num_beams` hypotheses are kept. The best
    not-ended continuations are the next beams. An input is done when no running beam can beat its worst kept
    hypothesis (how that is estimated depends on `early_stopping`), or, with early_stopping=True, as soon as it
    has `num_beams` hypotheses.
    """

    def __init__(
        self,
        start: torch.Tensor,
        settings: GenerationSettings,
        eos: torch.Tensor | None,
        pad: int | None,
        processors: list[Processor],
        generators: list[torch.Generator] | None,
    ) -> None:
        self.settings, self.eos, self.processors, self.generators = settings, eos, processors, generators
        beams = settings.num_beams
        batch, self.prompt = start.shape
        max_length, device = settings.max_length, start.device
        self.keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * beams
        self.among_top = torch.arange(self.keep, device=device) < beams
        # Unused positions hold the pad token, or eos when pad is 0 (the reference's `pad or eos` fallback).
        fill = (pad or int(eos[0])) if eos is not None else -1

        self.running = torch.full((batch, beams, max_length), fill, dtype=torch.long, device=device)
        self.running[:, :, : self.prompt] = start[:, None]
        self.running_scores = torch.zeros(batch, beams, device=device)
        self.running_scores[:, 1:] = EXCLUDED  # all beams start equal: let only the first one expand at first
        self.hyps = self.running.clone()
        self.hyp_scores = torch.full((batch, beams), EXCLUDED, device=device)
        self.hyp_lengths = torch.zeros(batch, beams, dtype=torch.long, device=device)
        self.hyp_done = torch.zeros(batch, beams, dtype=torch.bool, device=device)
        self.improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
        self.offsets = torch.arange(batch, device=device)[:, None] * beams
        self.cur = self.prompt
        self.done = False

    def rows(self) -> torch.Tensor:
        """The running beams' sequences, (batch * beams, length so far): the next step scores them."""
        batch, beams, _ = self.running.shape
        return self.running[:, :, : self.cur].reshape(batch * beams, self.cur)

    def advance(self, logits: torch.Tensor) -> torch.Tensor:
        """Take one step on the logits of `rows()`; return which old row each new row continues (for the cache)."""
        s, cur, prompt = self.settings, self.cur, self.prompt
        beams, lp, early, max_length = s.num_beams, s.length_penalty, s.early_stopping, s.max_length
        batch = self.running.shape[0]
        log_probs = _process(self.processors, self.rows(), F.log_softmax(logits, dim=-1))
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, beams, vocab) + self.running_scores[:, :, None]).view(batch, beams * vocab)

        # `keep` continuations over all beams of each input.
        if s.do_sample:
            top = _draw(totals.softmax(dim=-1), self.keep, self.generators)
            top_scores = totals.gather(1, top)
        else:
            top_scores, top = torch.topk(totals, self.keep)
        parent = top // vocab
        top_seqs = self.running.gather(1, parent[:, :, None].expand(-1, -1, max_length)).clone()
        top_seqs[:, :, cur] = top % vocab
        flat_top = top_seqs[:, :, : cur + 1].reshape(batch * self.keep, cur + 1)
        ended = _stops(flat_top, max_length, self.eos).view(batch, self.keep)

        # The next beams: the best continuations that did not end.
        open_scores = top_scores + ended.float() * EXCLUDED
        chosen = torch.topk(open_scores, beams)[1]
        self.running = top_seqs.gather(1, chosen[:, :, None].expand(-1, -1, max_length))
        self.running_scores = open_scores.gather(1, chosen)
        order = (parent.gather(1, chosen) + self.offsets).flatten()

        # Hypotheses: merge the new ended ones (length-penalized) with those kept so far, keep the best.
        new_scores = top_scores / ((cur + 1 - prompt) ** lp)
        full = self.hyp_done.all(dim=-1, keepdim=True) & (early is True)
        new_scores += full.float() * EXCLUDED
        new_scores += (~self.improvable).float() * EXCLUDED
        new_done = ended & self.among_top[None, :]
        new_scores += (~new_done) * EXCLUDED
        merged_scores = torch.cat([self.hyp_scores, new_scores], dim=1)
        best = torch.topk(merged_scores, beams)[1]
        self.hyps = torch.cat([self.hyps, top_seqs], dim=1).gather(1, best[:, :, None].expand(-1, -1, max_length))
        self.hyp_scores = merged_scores.gather(1, best)
        new_lengths = torch.full_like(new_done, cur + 1 - prompt, dtype=torch.long)
        self.hyp_lengths = torch.cat([self.hyp_lengths, new_lengths], dim=1).gather(1, best)
        self.hyp_done = torch.cat([self.hyp_done, new_done], dim=1).gather(1, best)

        self.cur = cur = cur + 1
        self.improvable &= _can_improve(self.running_scores, self.hyp_scores, self.hyp_done, cur, prompt, s)
        all_full = bool(self.hyp_done.all()) and early is True
        self.done = not self.improvable.any() or all_full or bool(ended.all())
        return order

    def result(self) -> torch.Tensor:
        n, batch = self.settings.num_return_sequences, self.running.shape[0]
        length = self.prompt + int(self.hyp_lengths[:, :n].max())
        return self.hyps[:, :n, :length].reshape(batch * n, length)


def _can_improve(
    running_scores: torch.Tensor,
    hyp_scores: torch.Tensor,
    hyp_done: torch.Tensor,
    cur: int,
    prompt: int,
    settings: GenerationSettings,
) -> torch.Tensor:
    """Could the best running beam still beat the worst kept hypothesis? (batch, 1)

    The best beam's score is length-penalized at the current length, or at max_length with early_stopping="never"
    and a positive length penalty (longer is then better): the reference's heuristic.
    """
    if settings.early_stopping == "never" and settings.length_penalty > 0.0:
        best_length = settings.max_length - prompt
    else:
        best_length = cur - prompt
    best_running = running_scores[:, :1] / (best_length**settings.length_penalty)
    worst_kept = torch.where(hyp_done, hyp_scores.min(dim=1, keepdim=True)[0], EXCLUDED)
    return (best_running > worst_kept).any(dim=-1, keepdim=True)
