"""The BigBirdPegasus family: a block-sparse encoder, a full-attention decoder, and the five model classes of the seed.

Layers are pre-norm (LayerNorm before each sub-block, residual around it) with one final LayerNorm after the last
layer of the encoder and of the decoder. Positions are learned embeddings; token embeddings are scaled by
sqrt(d_model) when `scale_embedding` is set. The encoder's self-attention is `bigbird.models.attention.Attention`
(block-sparse or full, chosen per call); the decoder's self-attention is full, through `full_attention`, and its
cross-attention goes through `cross_attention.CrossKeysValues`.

Decoder rows may outnumber encoder rows by a whole factor g (beam search: g beams per input): cross-attention then
folds the g rows of one input into its query axis, so that encoder states and cross-attention keys/values are held
once per input, never copied per beam.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (
    Attention,
    additive_mask,
    causal_bias,
    full_attention,
    kept_cross_attention,
    pad_to_blocks,
    runs_block_sparse,
)
from .bigbird import classification_loss, span_loss
from .config import GENERATION_DEFAULTS, BigBirdPegasusConfig
from .cross_attention import CrossKeysValues
from .generation import DecoderCache, generate
from .initialization import Embedding
from .linear import Linear
from .modeling import ModelOutput, PretrainedModel, feed_forward_in_slices


def shift_tokens_right(ids: torch.Tensor, pad_token_id: int, start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the start token, then the targets minus their last token.

    Label positions marked -100 (ignored by the loss) become padding, since they are no token.
    """
    shifted = ids.new_full(ids.shape, start_token_id)
    shifted[:, 1:] = ids[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: BigBirdPegasusConfig, layer_idx: int) -> None:
        super().__init__()
        d = config.d_model
        self.attn = Attention.from_config(config, layer_idx)
        self.attn_out = Linear(d, d, bias=config.use_bias)
        self.attn_norm = nn.LayerNorm(d)
        self.ffn_in = Linear(d, config.encoder_ffn_dim, activation=config.activation_function)
        self.ffn_out = Linear(config.encoder_ffn_dim, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_out(self.ffn_in(self.ffn_norm(x)))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, *, sparse: bool, bias: torch.Tensor | None, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.attn(
            self.attn_norm(x), mask, sparse=sparse, bias=bias, output_attentions=output_attentions
        )
        x = x + self.dropout(self.attn_out(context))
        x = x + self.dropout(feed_forward_in_slices(self.feed_forward, x, self.ffn_in.out_features))
        if x.dtype == torch.float16 and not torch.isfinite(x).all():
            # fp16 activations of long inputs can overflow; clamping keeps them finite, as the reference does.
            limit = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-limit, limit)
        return x, probs


class DecoderAttention(nn.Module):
    """Full multi-head attention of the decoder: causal self-attention over a KV cache, or cross-attention.

    For cross-attention the keys/values come from the encoder states and are computed once per input (kept in the
    cache); `CrossKeysValues` attends to them, with the g decoder rows of an input (beams) folded into its queries.
    """

    def __init__(self, d_model: int, num_heads: int, *, bias: bool, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of the {num_heads} attention heads")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.query = Linear(d_model, d_model, bias=bias)
        self.key = Linear(d_model, d_model, bias=bias)
        self.value = Linear(d_model, d_model, bias=bias)
        self.out = Linear(d_model, d_model, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.key(source)), self._heads(self.value(source))

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        layer_idx: int,
        cache: DecoderCache | None = None,
        encoder_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention when `encoder_states` is None, else cross-attention to them."""
        q = self._heads(self.query(x))
        dropout = self.dropout if self.training else 0.0
        if encoder_states is None:
            k, v = self._keys_values(x)
            if cache is not None:  # caches the new keys/values; a RaggedCache attends input by input
                context, probs = cache.self_attend(layer_idx, q, k, v, bias, dropout, output_attentions)
            else:
                context, probs = full_attention(q, k, v, bias, dropout, output_probs=output_attentions)
        else:
            project = functools.partial(self._keys_values, encoder_states)
            if cache is not None:
                args = (q, project, bias, dropout, self.key, cache, layer_idx, output_attentions)
                context, probs = kept_cross_attention(*args)
            else:
                context, probs = CrossKeysValues(*project()).attend(q, bias, dropout, output_probs=output_attentions)
        return self.out(context.transpose(1, 2).flatten(2)), probs


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, cross-attention (when there are encoder states), ffn."""

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__()
        d, heads = config.d_model, config.decoder_attention_heads
        self.attn = DecoderAttention(d, heads, bias=config.use_bias, dropout=config.attention_dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.cross = DecoderAttention(d, heads, bias=config.use_bias, dropout=config.attention_dropout)
        self.cross_norm = nn.LayerNorm(d)
        self.ffn_in = Linear(d, config.decoder_ffn_dim, activation=config.activation_function)
        self.ffn_out = Linear(config.decoder_ffn_dim, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.act_dropout = nn.Dropout(config.activation_dropout)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        layer_idx: int,
        cache: DecoderCache | None,
        encoder_states: torch.Tensor | None,
        encoder_bias: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        h, probs = self.attn(
            self.attn_norm(x), bias, layer_idx=layer_idx, cache=cache, output_attentions=output_attentions
        )
        x = x + self.dropout(h)
        cross_probs = None
        if encoder_states is not None:
            h, cross_probs = self.cross(
                self.cross_norm(x),
                encoder_bias,
                layer_idx=layer_idx,
                cache=cache,
                encoder_states=encoder_states,
                output_attentions=output_attentions,
            )
            x = x + self.dropout(h)
        h = self.act_dropout(self.ffn_in(self.ffn_norm(x)))
        return x + self.dropout(self.ffn_out(h)), probs, cross_probs


# --------------------------------------------------------------------------------------------------
# Encoder and decoder stacks
# --------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Scaled token + learned position embeddings, pre-norm layers, a final LayerNorm."""

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.tokens = Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.positions = Embedding(config.max_position_embeddings, d)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.encoder_layers))
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.scale = d**0.5 if config.scale_embedding else 1.0

    def uses_sparse(self, seq_len: int) -> bool:
        """Block-sparse for this call? Inputs too short for the sparse layout run full attention."""
        return runs_block_sparse(self.config, seq_len)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        embeds = self.tokens(input_ids) * self.scale if inputs_embeds is None else inputs_embeds
        batch, seq_len = embeds.shape[:2]
        device = embeds.device
        x = self.dropout(embeds + self.positions(torch.arange(seq_len, device=device)))
        mask = torch.ones(batch, seq_len, dtype=torch.long, device=device) if attention_mask is None else attention_mask
        mask = mask.long()

        sparse = self.uses_sparse(seq_len)
        if sparse and seq_len % self.config.block_size:
            # Padded invisibly to whole blocks: masked out as keys, cut off again below.
            pad_token = self.tokens(torch.tensor([self.config.pad_token_id], device=device)) * self.scale
            x, mask = pad_to_blocks(x, mask, self.config.block_size, pad_token)
        bias = None if sparse else additive_mask(mask, x.dtype)

        hidden_states, attentions = [x[:, :seq_len]], []
        for layer in self.layers:
            x, probs = layer(x, mask, sparse=sparse, bias=bias, output_attentions=output_attentions)
            hidden_states.append(x[:, :seq_len])
            attentions.append(probs)
        x = self.norm(x[:, :seq_len])
        hidden_states[-1] = x  # the inputs of each layer, then the final (normed) output, as the reference
        return ModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class Decoder(nn.Module):
    """Scaled token + learned position embeddings (offset by the cache length), pre-norm layers, a final LayerNorm."""

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__()
        d = config.d_model
        self.tokens = Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.positions = Embedding(config.max_position_embeddings, d)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.scale = d**0.5 if config.scale_embedding else 1.0

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: DecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """`attention_mask` covers the cached and the new tokens; the encoder may have fewer rows (see module doc).

        With a `generation.RaggedCache` (several inputs decoded together, each at its own length), the cache holds
        every input's cross-attention keys/values and `encoder_hidden_states` is the list of the inputs' states.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of decoder input_ids and inputs_embeds")
        embeds = self.tokens(input_ids) * self.scale if inputs_embeds is None else inputs_embeds
        rows, new = embeds.shape[:2]
        device = embeds.device
        cache = past_key_values
        if cache is None and use_cache:
            cache = DecoderCache(len(self.layers))
        past = cache.length if cache is not None else 0
        positions = cache.positions(new, device) if cache is not None else torch.arange(new, device=device)
        x = self.dropout(embeds + self.positions(positions))
        bias = causal_bias(attention_mask, new, past, x.dtype, device)
        encoder_bias = None  # also when nothing is padded: a bias of zeros is a pass over every score for nothing
        if (
            encoder_hidden_states is not None
            and encoder_attention_mask is not None
            and not encoder_attention_mask.all()
        ):
            encoder_bias = additive_mask(encoder_attention_mask, x.dtype)

        hidden_states, attentions, cross_attentions = [x], [], []
        for i, layer in enumerate(self.layers):
            x, probs, cross = layer(
                x,
                bias,
                layer_idx=i,
                cache=cache,
                encoder_states=encoder_hidden_states,
                encoder_bias=encoder_bias,
                output_attentions=output_attentions,
            )
            hidden_states.append(x)
            attentions.append(probs)
            cross_attentions.append(cross)
        x = self.norm(x)
        hidden_states[-1] = x
        return ModelOutput(
            last_hidden_state=x,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions)
            if output_attentions and encoder_hidden_states is not None
            else None,
        )


# --------------------------------------------------------------------------------------------------
# Model classes
# --------------------------------------------------------------------------------------------------
def _ties(prefix: str) -> tuple[tuple[str, str], ...]:
    """The encoder's and decoder's token embeddings are the shared matrix of the base model under `prefix`."""
    return (
        (f"{prefix}encoder.tokens.weight", f"{prefix}shared.weight"),
        (f"{prefix}decoder.tokens.weight", f"{prefix}shared.weight"),
    )


class BigBirdPegasusPretrainedModel(PretrainedModel):
    config_class = BigBirdPegasusConfig


def _encoder_outputs(encoder_outputs: Any) -> ModelOutput:
    """Accept encoder outputs as our ModelOutput, a tuple/list (last hidden state first), or a bare tensor."""
    if isinstance(encoder_outputs, ModelOutput):
        return encoder_outputs
    if isinstance(encoder_outputs, torch.Tensor):
        return ModelOutput(last_hidden_state=encoder_outputs, hidden_states=None, attentions=None)
    items = list(encoder_outputs) + [None, None]
    return ModelOutput(last_hidden_state=items[0], hidden_states=items[1], attentions=items[2])


class BigBirdPegasusModel(BigBirdPegasusPretrainedModel):
    """Encoder + decoder. Without decoder inputs, the decoder reads the encoder input shifted right (as the seed)."""

    tied = _ties("")

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__(config)
        self.shared = Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        past_key_values: DecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Encoder (block-sparse or full) over (B, S) `input_ids`, then the decoder over `decoder_input_ids`
        (default: the input shifted right) → `last_hidden_state` of the decoder, `encoder_last_hidden_state`;
        `encoder_outputs` skips the encoder, a `past_key_values` DecoderCache with `use_cache` feeds only new
        decoder tokens."""
        c = self.config
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass decoder_input_ids or decoder_inputs_embeds, or input_ids to shift right")
            decoder_input_ids = shift_tokens_right(input_ids, c.pad_token_id, c.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids,
                attention_mask,
                inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
        encoder_outputs = _encoder_outputs(encoder_outputs)
        decoded = self.decoder(
            decoder_input_ids,
            decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=c.use_cache if use_cache is None else use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return ModelOutput(
            last_hidden_state=decoded.last_hidden_state,
            past_key_values=decoded.past_key_values,
            decoder_hidden_states=decoded.hidden_states,
            decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


def _seq2seq_extras(out: ModelOutput) -> dict[str, Any]:
    """The base model's outputs a head passes through unchanged."""
    keys = ("past_key_values", "decoder_hidden_states", "decoder_attentions", "cross_attentions")
    keys += ("encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions")
    return {k: out[k] for k in keys}


class BigBirdPegasusForConditionalGeneration(BigBirdPegasusPretrainedModel):
    """Summarization: decoder states → vocabulary logits (tied to the shared embeddings) + `final_logits_bias`."""

    tied = (*_ties("model."), ("lm_head.weight", "model.shared.weight"))

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__(config)
        self.model = BigBirdPegasusModel(config)
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        """BigBirdPegasusModel's inputs → vocabulary `logits` (B, T, vocab); with `labels` (B, T; -100 where not
        scored) the cross-entropy `loss`, the decoder reading the labels shifted right. `generate` summarizes."""
        if labels is not None:
            use_cache = False  # training: nothing to decode incrementally
            if decoder_input_ids is None and kwargs.get("decoder_inputs_embeds") is None:
                c = self.config
                decoder_input_ids = shift_tokens_right(labels, c.pad_token_id, c.decoder_start_token_id)
        out = self.model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids, use_cache=use_cache, **kwargs)
        logits = self.lm_head(out.last_hidden_state) + self.final_logits_bias.to(out.last_hidden_state.dtype)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.vocab_size), labels.view(-1).long().to(logits.device))
        return ModelOutput(loss=loss, logits=logits, **_seq2seq_extras(out))

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any
    ) -> torch.Tensor:
        """Summaries as token ids (batch * num_return_sequences, length), decoder start token first.

        Options (each defaults to the checkpoint's config / generation_config.json): num_beams, length_penalty,
        early_stopping (True, False or "never"), num_return_sequences, max_length or max_new_tokens, min_length or
        min_new_tokens (lengths count the start token), no_repeat_ngram_size, repetition_penalty,
        forced_bos_token_id, forced_eos_token_id, the eos/pad/decoder start token ids, and sampling: do_sample,
        temperature, top_k, top_p (plus `generators`, one torch.Generator per input row). Token-identical to
        the reference's generate under the same torch.manual_seed; see bigbird.models.generation for how memory
        differs.
        """
        return generate(self, input_ids, attention_mask, **options)

    def save_pretrained(self, directory: str | Path) -> None:
        """Also write generation_config.json, so that other tools generate with the same settings."""
        super().save_pretrained(directory)
        c = self.config
        settings = {k: getattr(c, k) for k in GENERATION_DEFAULTS if getattr(c, k) != GENERATION_DEFAULTS[k]}
        settings["max_length"] = c.max_length  # always: it is a total length, never "20 new tokens"
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            settings[key] = getattr(c, key)
        path = Path(directory) / "generation_config.json"
        path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class ClassificationHead(nn.Module):
    """dropout → dense → tanh → dropout → labels, over the decoder state at the last </s>."""

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__()
        self.dense = Linear(config.d_model, config.d_model, activation="tanh")
        self.out = Linear(config.d_model, config.num_labels)
        self.dropout = nn.Dropout(config.classifier_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.dense(self.dropout(x))))


class BigBirdPegasusForSequenceClassification(BigBirdPegasusPretrainedModel):
    """Classifies from the decoder state at each row's last </s> (every row needs the same number of them)."""

    tied = _ties("model.")

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__(config)
        self.model = BigBirdPegasusModel(config)
        self.classifier = ClassificationHead(config)
        self.init_weights()

    def forward(
        self, input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs
    ) -> ModelOutput:
        """(B, S) ids (BigBirdPegasusModel's other inputs as keywords) → `logits` (B, num_labels) from the
        decoder state at each row's last </s>; with `labels` the `loss` the config's problem_type names."""
        if input_ids is None:
            raise ValueError("BigBirdPegasusForSequenceClassification needs input_ids to find the </s> tokens")
        if labels is not None:
            kwargs["use_cache"] = False
        out = self.model(input_ids, **kwargs)
        states = out.last_hidden_state
        eos = input_ids.eq(self.config.eos_token_id).to(states.device)
        counts = eos.sum(dim=1)
        if (counts != counts[0]).any():
            raise ValueError("all examples must have the same number of </s> tokens")
        if counts[0] == 0:
            raise ValueError("each example must contain at least one </s> token")
        last = states[eos].view(states.shape[0], -1, states.shape[-1])[:, -1]
        logits = self.classifier(last)
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels.to(logits.device), self.config.problem_type)
        return ModelOutput(loss=loss, logits=logits, **_seq2seq_extras(out))


class BigBirdPegasusForQuestionAnswering(BigBirdPegasusPretrainedModel):
    """Span start/end logits over the decoder states (the decoder reads the input shifted right)."""

    tied = _ties("model.")

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__(config)
        self.model = BigBirdPegasusModel(config)
        self.qa = Linear(config.d_model, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **kwargs,
    ) -> ModelOutput:
        """(B, S) ids of question and context (BigBirdPegasusModel's other inputs as keywords) → `start_logits`,
        `end_logits` (B, S); with `start_positions`/`end_positions` the span `loss`."""
        labelled = start_positions is not None and end_positions is not None
        if labelled:
            kwargs["use_cache"] = False
        out = self.model(input_ids, **kwargs)
        start_logits, end_logits = self.qa(out.last_hidden_state).unbind(dim=-1)
        loss = None
        if labelled:
            loss = span_loss(start_logits, end_logits, start_positions.to(start_logits.device), end_positions)
        return ModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            **_seq2seq_extras(out),
        )


class DecoderOnly(nn.Module):
    """Holds the decoder alone, so that its weights keep the checkpoint's `model.decoder.*` names."""

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        super().__init__()
        self.decoder = Decoder(config)


class BigBirdPegasusForCausalLM(BigBirdPegasusPretrainedModel):
    """The decoder as a left-to-right LM (cross-attention only when encoder states are given).

    As in the reference, `labels` are not shifted: labels[:, i] is the target of logits[:, i].
    """

    def __init__(self, config: BigBirdPegasusConfig) -> None:
        config = config.copy()
        config.is_decoder = True
        config.is_encoder_decoder = False
        super().__init__(config)
        self.model = DecoderOnly(config)
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: DecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """The decoder alone as a left-to-right LM: (B, T) ids → next-token `logits`; with `labels` (not shifted:
        the targets of the logits at their positions) the `loss`; cross-attention to `encoder_hidden_states` when
        given; a `past_key_values` DecoderCache with `use_cache` feeds only the new tokens."""
        out = self.model.decoder(
            input_ids,
            attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=self.config.use_cache if use_cache is None else use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.vocab_size), labels.view(-1).long().to(logits.device))
        return ModelOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )
