"""The BigBird encoder family: embeddings, encoder layers, and the eight model classes of the seed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, additive_mask, causal_bias, pad_to_blocks, runs_block_sparse
from .config import BigBirdConfig
from .generation import DecoderCache, generate_causal
from .initialization import Embedding
from .linear import Linear
from .modeling import ModelOutput, PretrainedModel, feed_forward_in_slices


class Embeddings(nn.Module):
    """Word + token-type + absolute position embeddings, then dropout and LayerNorm (in that order)."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__()
        self.tokens = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.positions = Embedding(config.max_position_embeddings, config.hidden_size)
        self.types = Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.scale = config.hidden_size**0.5 if config.rescale_embeddings else 1.0

    def forward(self, embeds: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = embeds * self.scale + self.types(token_type_ids) + self.positions(position_ids)
        return self.norm(self.dropout(x))


class BigBirdLayer(nn.Module):
    """Post-norm transformer layer: self-attention, cross-attention when the config makes it a decoder's
    (`add_cross_attention`), feed-forward."""

    def __init__(self, config: BigBirdConfig, layer_idx: int) -> None:
        super().__init__()
        h = config.hidden_size

        self.attn = Attention.from_config(config, layer_idx)
        self.attn_out = Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        if config.add_cross_attention:
            self.cross = Attention.from_config(config, layer_idx)
            self.cross_out = Linear(h, h)
            self.cross_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.ffn_in = Linear(h, config.intermediate_size, activation=config.hidden_act)
        self.ffn_out = Linear(config.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_out(self.ffn_in(x))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        *,
        sparse: bool,
        bias: torch.Tensor | None,
        encoder_states: torch.Tensor | None = None,
        encoder_bias: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        context, probs = self.attn(x, mask, sparse=sparse, bias=bias, cache=cache, output_attentions=output_attentions)
        x = self.attn_norm(self.dropout(self.attn_out(context)) + x)
        cross_probs = None
        if encoder_states is not None:
            context, cross_probs = self.cross(
                x,
                mask,
                sparse=False,
                bias=encoder_bias,
                encoder_states=encoder_states,
                cache=cache,
                output_attentions=output_attentions,
            )
            x = self.cross_norm(self.dropout(self.cross_out(context)) + x)
        ffn = feed_forward_in_slices(self.feed_forward, x, self.ffn_in.out_features)
        x = self.ffn_norm(self.dropout(ffn) + x)
        return x, probs, cross_probs


class BigBirdPretrainedModel(PretrainedModel):
    config_class = BigBirdConfig


class BigBirdModel(BigBirdPretrainedModel):
    """The bare encoder: `last_hidden_state` and a tanh `pooler_output` over the first token."""

    def __init__(self, config: BigBirdConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(BigBirdLayer(config, i) for i in range(config.num_hidden_layers))
        self.pooler = Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.init_weights()

    def uses_sparse(self, seq_len: int) -> bool:
        """Block-sparse for this call? Decoders and inputs too short for the sparse layout run full attention."""
        return runs_block_sparse(self.config, seq_len)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: DecoderCache | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """A decoder (`is_decoder`) may keep a KV cache: `attention_mask` then covers the cached and new tokens."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        embeds = self.embeddings.tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, seq_len = embeds.shape[:2]
        device = embeds.device
        cache = past_key_values
        if cache is None and use_cache and self.config.is_decoder:
            cache = DecoderCache(len(self.layers))
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + seq_len, dtype=torch.long, device=device)
        if token_type_ids is None:
            token_type_ids = torch.zeros(batch, seq_len, dtype=torch.long, device=device)
        if position_ids is None:
            position_ids = torch.arange(past, past + seq_len, device=device).expand(batch, seq_len)

        sparse = self.uses_sparse(seq_len)
        pad = 0
        if sparse and seq_len % self.config.block_size:
            # Padded invisibly to whole blocks: masked out as keys, cut off again below.
            pad_id = self.config.pad_token_id
            pad_token = self.embeddings.tokens(torch.tensor([pad_id], device=device))
            embeds, attention_mask = pad_to_blocks(embeds, attention_mask, self.config.block_size, pad_token)
            pad = embeds.shape[1] - seq_len
            token_type_ids = F.pad(token_type_ids, (0, pad), value=0)
            position_ids = F.pad(position_ids, (0, pad), value=pad_id)

        x = self.embeddings(embeds, token_type_ids, position_ids)
        if sparse:
            bias = None
        elif self.config.is_decoder:
            bias = causal_bias(attention_mask, seq_len, past, x.dtype, device)
        else:
            bias = additive_mask(attention_mask, x.dtype)
        encoder_bias = None
        if encoder_hidden_states is not None and not self.config.add_cross_attention:
            raise ValueError(
                "encoder_hidden_states need cross-attention layers: build the model from a config with "
                "add_cross_attention=True (and is_decoder=True)"
            )
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=device)
            encoder_bias = additive_mask(encoder_attention_mask, x.dtype)

        hidden_states, attentions, cross_attentions = [x[:, :seq_len]], [], []
        for layer in self.layers:
            x, probs, cross = layer(
                x,
                attention_mask,
                sparse=sparse,
                bias=bias,
                encoder_states=encoder_hidden_states,
                encoder_bias=encoder_bias,
                cache=cache,
                output_attentions=output_attentions,
            )
            hidden_states.append(x[:, :seq_len])
            attentions.append(probs)
            cross_attentions.append(cross)

        if cache is not None and pad:
            cache.crop(past + seq_len)  # the next tokens follow the real ones, not the block padding
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return ModelOutput(
            last_hidden_state=x[:, :seq_len],
            pooler_output=pooled,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions)
            if output_attentions and encoder_hidden_states is not None
            else None,
        )


class LMHead(nn.Module):
    """dense → activation → LayerNorm → vocabulary projection (tied to the word embeddings) + bias."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size, activation=config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.dense(x))) + self.bias


# The keyword arguments a head passes straight through to the encoder.
ENCODER_ARGS = ("attention_mask", "token_type_ids", "position_ids", "inputs_embeds")
ENCODER_ARGS += ("output_hidden_states", "output_attentions")


def _encoder_args(kwargs: dict) -> dict:
    """A head's keyword arguments for its encoder: any other is refused, since dropped it would do nothing
    silently (`attn_mask=` for `attention_mask=` left padding attended; `head_mask` is not supported)."""
    unknown = sorted(set(kwargs) - set(ENCODER_ARGS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the encoder takes {', '.join(ENCODER_ARGS)}")
    return kwargs


def _extras(out: ModelOutput) -> dict:
    return {"hidden_states": out.hidden_states, "attentions": out.attentions}


# The vocabulary projection of every LM head shares the word embeddings.
LM_TIED = (("lm.decoder.weight", "bert.embeddings.tokens.weight"),)


class BigBirdForMaskedLM(BigBirdPretrainedModel):
    """Masked-LM head on the encoder: every position's vocabulary logits (the projection tied to the embeddings)."""

    tied = LM_TIED

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.bert = BigBirdModel(config)
        self.lm = LMHead(config)
        self.init_weights()

    def forward(self, input_ids=None, labels=None, **kwargs) -> ModelOutput:
        """(B, T) ids and the encoder's keywords (`ENCODER_ARGS`) → `logits` (B, T, vocab); with `labels`
        (B, T; -100 where not scored) the cross-entropy `loss` too."""
        out = self.bert(input_ids, **_encoder_args(kwargs))
        logits = self.lm(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten().long().to(logits.device))
        return ModelOutput(loss=loss, logits=logits, **_extras(out))


class BigBirdForCausalLM(BigBirdPretrainedModel):
    """Left-to-right LM: full causal self-attention (and cross-attention when the config adds it), with a KV cache
    for `generate` (greedy, beam search, sampling)."""

    tied = LM_TIED

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.bert = BigBirdModel(config)
        self.lm = LMHead(config)
        self.init_weights()

    @property
    def num_cache_layers(self) -> int:
        return len(self.bert.layers)

    def forward(
        self,
        input_ids=None,
        labels=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        past_key_values: DecoderCache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> ModelOutput:
        """(B, T) ids (attention_mask and the other encoder arguments as keywords; encoder_hidden_states when the
        config adds cross-attention) → next-token `logits` (B, T, vocab); with `labels` the shifted LM `loss`; a
        `past_key_values` DecoderCache with `use_cache` feeds only the new tokens (what `generate` does)."""
        out = self.bert(
            input_ids,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=bool(self.config.use_cache if use_cache is None else use_cache) and labels is None,
            **_encoder_args(kwargs),
        )
        logits = self.lm(out.last_hidden_state)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].flatten(0, 1).float()
            loss = F.cross_entropy(shifted, labels[:, 1:].flatten().long().to(logits.device), ignore_index=-100)
        return ModelOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            cross_attentions=out.cross_attentions,
            **_extras(out),
        )

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any
    ) -> torch.Tensor:
        """Continuations of the prompts, prompt included: (batch * num_return_sequences, length).

        Options as BigBirdPegasusForConditionalGeneration.generate (lengths count the prompt). The decoder runs
        full causal attention over its KV cache; token-identical to the reference's generate.
        """
        return generate_causal(self, input_ids, attention_mask, **options)


class BigBirdForPreTraining(BigBirdPretrainedModel):
    """Masked-LM and next-sentence heads, as in the original pre-training."""

    tied = LM_TIED

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.bert = BigBirdModel(config)
        self.lm = LMHead(config)
        self.nsp = Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids=None, labels=None, next_sentence_label=None, **kwargs) -> ModelOutput:
        """(B, T) ids and the encoder's keywords (`ENCODER_ARGS`) → masked-LM `logits` and next-sentence
        `seq_relationship_logits`; with `labels` and `next_sentence_label` the summed `loss`."""
        out = self.bert(input_ids, **_encoder_args(kwargs))
        logits = self.lm(out.last_hidden_state)
        nsp_logits = self.nsp(out.pooler_output)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten().long().to(logits.device))
            if next_sentence_label is not None:
                loss = loss + F.cross_entropy(nsp_logits, next_sentence_label.flatten().long().to(logits.device))
        return ModelOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=nsp_logits, **_extras(out))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """Regression for one label, cross-entropy for integer labels, BCE for multi-label float targets."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1).long())
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class ClassificationHead(nn.Module):
    """First token → dropout → dense → activation → dropout → labels."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__()
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = Linear(config.hidden_size, config.hidden_size, activation=config.hidden_act)
        self.out = Linear(config.hidden_size, config.num_labels)
        self.dropout = nn.Dropout(p)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.dropout(states[:, 0]))
        return self.out(self.dropout(x))


class BigBirdForSequenceClassification(BigBirdPretrainedModel):
    """Classification head on the encoder's first token ([CLS]): `num_labels` logits a sequence."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.bert = BigBirdModel(config)
        self.classifier = ClassificationHead(config)
        self.init_weights()

    def forward(self, input_ids=None, labels=None, **kwargs) -> ModelOutput:
        """(B, T) ids and the encoder's keywords (`ENCODER_ARGS`) → `logits` (B, num_labels); with `labels` the
        `loss` the config's problem_type names (regression, single- or multi-label)."""
        out = self.bert(input_ids, **_encoder_args(kwargs))
        logits = self.classifier(out.last_hidden_state)
        loss = classification_loss(logits, labels, self.config.problem_type) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, **_extras(out))


class BigBirdForMultipleChoice(BigBirdPretrainedModel):
    """Scores each of the C choices of a (B, C, T) input from its pooled output."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.bert = BigBirdModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(self, input_ids=None, labels=None, **kwargs) -> ModelOutput:
        """(B, C, T) ids of C choices (the encoder's keyword arguments shaped alike) → `logits` (B, C); with
        `labels` (B,) the cross-entropy `loss`."""
        args = _encoder_args(kwargs)
        shape_source = input_ids if input_ids is not None else args["inputs_embeds"]
        num_choices = shape_source.shape[1]
        flat = {k: (v.flatten(0, 1) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
        out = self.bert(input_ids.flatten(0, 1) if input_ids is not None else None, **flat)
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, num_choices)
        loss = F.cross_entropy(logits, labels.long()) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, **_extras(out))


class BigBirdForTokenClassification(BigBirdPretrainedModel):
    """A linear layer over every position of the encoder: `num_labels` logits a token."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.bert = BigBirdModel(config)
        self.dropout = nn.Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, labels=None, **kwargs) -> ModelOutput:
        """(B, T) ids and the encoder's keywords (`ENCODER_ARGS`) → `logits` (B, T, num_labels); with `labels`
        (B, T; -100 where not scored) the cross-entropy `loss`."""
        out = self.bert(input_ids, **_encoder_args(kwargs))
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1).long())
        return ModelOutput(loss=loss, logits=logits, **_extras(out))


class QAHead(nn.Module):
    """A feed-forward block over the encoder output, then start/end logits (trivia-qa head)."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.ffn_in = Linear(config.hidden_size, config.intermediate_size, activation=config.hidden_act)
        self.ffn_out = Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.out = Linear(config.hidden_size, 2)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.ffn_in(self.dropout(states))
        x = self.norm(self.dropout(self.ffn_out(x)) + states)
        return self.out(x)


def question_mask(question_lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """1 for the question's tokens (positions below its length), 0 for the context."""
    positions = torch.arange(seq_len, device=question_lengths.device)[None, :]
    return (positions < question_lengths.view(-1, 1)).long()


def span_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Mean of start and end cross-entropies; positions outside the sequence are ignored."""
    ignored = start_logits.shape[1]
    start = start_positions.view(-1).long().clamp(0, ignored)
    end = end_positions.view(-1).long().clamp(0, ignored)
    return (
        F.cross_entropy(start_logits, start, ignore_index=ignored)
        + F.cross_entropy(end_logits, end, ignore_index=ignored)
    ) / 2


class BigBirdForQuestionAnswering(BigBirdPretrainedModel):
    """Extractive QA. Question tokens (up to the first [SEP], or `question_lengths`) can't be answers:
    their logits are pushed down by 1e6, except [CLS], which stands for "no answer"."""

    def __init__(self, config: BigBirdConfig, add_pooling_layer: bool = False) -> None:
        super().__init__(config)
        self.bert = BigBirdModel(config, add_pooling_layer=add_pooling_layer)
        self.qa = QAHead(config)
        self.init_weights()

    def forward(
        self, input_ids=None, question_lengths=None, start_positions=None, end_positions=None, **kwargs
    ) -> ModelOutput:
        """(B, T) ids of question then context and the encoder's keywords (`ENCODER_ARGS`) → `start_logits`,
        `end_logits` (B, T), question tokens masked (`question_lengths`, or each row's first [SEP]); with
        `start_positions`/`end_positions` the span `loss`."""
        args = _encoder_args(kwargs)
        seq_len = (input_ids if input_ids is not None else args["inputs_embeds"]).shape[1]
        if question_lengths is None and input_ids is not None:
            question_lengths = (input_ids == self.config.sep_token_id).int().argmax(dim=-1) + 1
        logits_mask = None
        if question_lengths is not None:
            logits_mask = question_mask(question_lengths, seq_len)
            if args.get("token_type_ids") is None:
                args["token_type_ids"] = 1 - logits_mask
            logits_mask[:, 0] = 0
        out = self.bert(input_ids, **args)
        logits = self.qa(out.last_hidden_state)
        if logits_mask is not None:
            logits = logits - logits_mask[:, :, None] * 1e6
        start_logits, end_logits = logits.unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        return ModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            pooler_output=out.pooler_output,
            **_extras(out),
        )
