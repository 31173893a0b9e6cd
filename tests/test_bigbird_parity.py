"""Parity of the BigBird family with transformers 5.23.0, computed in the same run on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import bigbird
from bigbird.models import private_ops
from bigbird.models.checkpoints import BIGBIRD_TABLE, checkpoint_state_dict, translate

CLASSES = [
    "BigBirdModel",
    "BigBirdForPreTraining",
    "BigBirdForMaskedLM",
    "BigBirdForCausalLM",
    "BigBirdForSequenceClassification",
    "BigBirdForMultipleChoice",
    "BigBirdForTokenClassification",
    "BigBirdForQuestionAnswering",
]
OUTPUT_NAMES = [
    "last_hidden_state",
    "pooler_output",
    "logits",
    "prediction_logits",
    "seq_relationship_logits",
    "start_logits",
    "end_logits",
    "loss",
]
TOL = 1e-4
SEP = 66


def tiny_config(**overrides) -> dict:
    """A small BigBird: 8-token blocks so that a couple of hundred tokens exercise every block-sparse part."""
    base = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=512,
        block_size=8,
        num_random_blocks=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,  # larger than the default so that differences would show
        sep_token_id=SEP,
        num_labels=3,
    )
    return {**base, **overrides}


def reference_and_ours(name: str, tmp_path, **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random transformers model, saved in the Hub layout and loaded by us."""
    torch.manual_seed(0)
    ref_config = transformers.BigBirdConfig(**tiny_config(**config))
    if name == "BigBirdForCausalLM":
        ref_config.is_decoder = True
    ref = getattr(transformers, name)(ref_config).eval()
    ref.save_pretrained(tmp_path)
    return ref, getattr(bigbird, name).from_pretrained(tmp_path)


def make_inputs(name: str, seq_len: int, batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """A padded batch: the last row ends early. QA inputs get a question ended by [SEP].

    A block-sparse decoder is compared on inputs short enough for the reference to fall back to full causal
    attention: on longer ones transformers runs block-sparse attention in a decoder, which is not causal (the
    future leaks into every position); we always run a decoder with full causal attention.
    """
    if name == "BigBirdForCausalLM":
        seq_len = seq_len % 64 + 8
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, seq_len), generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[-1, seq_len - seq_len // 3 :] = 0
    ids[-1, seq_len - seq_len // 3 :] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "BigBirdForQuestionAnswering":
        ids[:, 7] = SEP
    if name == "BigBirdForMultipleChoice":
        inputs = {k: v[:, None].repeat(1, 3, 1) for k, v in inputs.items()}
        inputs["input_ids"][:, 1, 3] += 1
    return inputs


def labels_for(name: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ids = inputs["input_ids"]
    batch = ids.shape[0]
    if name in ("BigBirdForMaskedLM", "BigBirdForCausalLM", "BigBirdForTokenClassification"):
        labels = ids % 3 if name == "BigBirdForTokenClassification" else ids.clone()
        return {"labels": labels}
    if name == "BigBirdForPreTraining":
        return {"labels": ids.clone(), "next_sentence_label": torch.tensor([0, 1][:batch])}
    if name == "BigBirdForSequenceClassification":
        return {"labels": torch.tensor([2, 0][:batch])}
    if name == "BigBirdForMultipleChoice":
        return {"labels": torch.tensor([1, 2][:batch])}
    if name == "BigBirdForQuestionAnswering":
        return {"start_positions": torch.tensor([9, 12]), "end_positions": torch.tensor([11, 20])}
    return {}


def assert_outputs_match(ref_out, our_out, valid: torch.Tensor | None = None) -> list[str]:
    compared = []
    for key in OUTPUT_NAMES:
        theirs = getattr(ref_out, key, None)
        if theirs is None:
            continue
        ours = our_out[key]
        assert ours is not None, f"{key} missing from our outputs"
        assert ours.shape == theirs.shape, key
        diff = (ours - theirs).abs().max().item()
        assert diff <= TOL, f"{key}: max |diff| {diff}"
        compared.append(key)
    return compared


@pytest.mark.parametrize("seq_len", [200, 203])
@pytest.mark.parametrize("attention_type", ["block_sparse", "original_full"])
@pytest.mark.parametrize("name", CLASSES)
def test_parity_all_classes(name, attention_type, seq_len, tmp_path):
    ref, ours = reference_and_ours(name, tmp_path, attention_type=attention_type)
    inputs = make_inputs(name, seq_len)
    labels = labels_for(name, inputs)
    with torch.no_grad():
        ref_out = ref(**inputs, **labels)
        our_out = ours(**inputs, **labels)
    compared = assert_outputs_match(ref_out, our_out)
    assert len(compared) >= 2
    assert name == "BigBirdModel" or "loss" in compared


@pytest.mark.parametrize(
    "variation",
    [{"rescale_embeddings": True}, {"use_bias": False}, {"num_random_blocks": 3, "block_size": 16}],
    ids=["rescale_embeddings", "no_bias", "r3_bs16"],
)
def test_parity_config_variations(variation, tmp_path, fast_paths):
    """Also with torch's private fast ops off: the public paths they fall back to keep parity too."""
    ref, ours = reference_and_ours("BigBirdForMaskedLM", tmp_path, **variation)
    inputs = make_inputs("BigBirdForMaskedLM", 301)
    with torch.no_grad():
        assert_outputs_match(ref(**inputs), ours(**inputs))


@pytest.mark.parametrize("attention_type", ["block_sparse", "original_full"])
def test_parity_hidden_states_and_attentions(attention_type, tmp_path):
    ref, ours = reference_and_ours("BigBirdModel", tmp_path, attention_type=attention_type)
    inputs = make_inputs("BigBirdModel", 200)
    with torch.no_grad():
        ref_out = ref(**inputs, output_hidden_states=True, output_attentions=True)
        our_out = ours(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(our_out.hidden_states) == len(ref_out.hidden_states)
    for theirs, mine in zip(ref_out.hidden_states, our_out.hidden_states, strict=True):
        assert (theirs - mine).abs().max() <= TOL
    # Attention probabilities are compared on real (unpadded) query rows: a padded query's output is zeroed
    # in block-sparse mode, and the reference spreads that row's (unused) weights differently.
    valid = inputs["attention_mask"].bool()
    for theirs, mine in zip(ref_out.attentions, our_out.attentions, strict=True):
        assert theirs.shape == mine.shape
        rows = valid[:, None, :, None].expand_as(theirs)
        assert (theirs - mine).abs()[rows].max() <= TOL


def test_parity_token_type_ids_position_ids_and_inputs_embeds(tmp_path):
    ref, ours = reference_and_ours("BigBirdModel", tmp_path)
    inputs = make_inputs("BigBirdModel", 203)
    types = torch.zeros_like(inputs["input_ids"])
    types[:, 100:] = 1
    positions = torch.arange(203).expand(2, 203) + 3
    embeds = ours.embeddings.tokens(inputs["input_ids"]).detach()
    with torch.no_grad():
        for kwargs in (
            {"input_ids": inputs["input_ids"], "token_type_ids": types, "position_ids": positions},
            {"inputs_embeds": embeds},
        ):
            ref_out = ref(attention_mask=inputs["attention_mask"], **kwargs)
            our_out = ours(attention_mask=inputs["attention_mask"], **kwargs)
            assert_outputs_match(ref_out, our_out)


def test_question_answering_masks_the_question(tmp_path):
    ref, ours = reference_and_ours("BigBirdForQuestionAnswering", tmp_path)
    inputs = make_inputs("BigBirdForQuestionAnswering", 150)
    lengths = torch.tensor([[5], [9]])
    with torch.no_grad():
        ref_out = ref(**inputs, question_lengths=lengths)
        our_out = ours(**inputs, question_lengths=lengths)
    assert_outputs_match(ref_out, our_out)
    # Question tokens (but not [CLS]) are pushed out of reach.
    assert (our_out.start_logits[0, 1:5] < -1e5).all() and our_out.start_logits[0, 0] > -1e5
    assert (our_out.start_logits[0, 5:] > -1e5).all()


def test_backward_gradients_match(tmp_path):
    ref, ours = reference_and_ours("BigBirdForMaskedLM", tmp_path)
    inputs = make_inputs("BigBirdForMaskedLM", 203)
    labels = labels_for("BigBirdForMaskedLM", inputs)
    ref(**inputs, **labels).loss.backward()
    ours(**inputs, **labels).loss.backward()
    ref_grads = {k: p.grad for k, p in ref.named_parameters() if p.grad is not None}
    checked = 0
    for name, param in ours.named_parameters():
        theirs = translate(name, BIGBIRD_TABLE)
        if theirs in ref_grads:
            assert param.grad is not None, name
            assert (param.grad - ref_grads[theirs]).abs().max() <= TOL, name
            checked += 1
    assert checked > 20


def test_causal_lm_is_causal_and_cross_attention_reads_the_encoder():
    """transformers 5.23 also feeds encoder states to the *self*-attention of a BigBird decoder layer, so its
    cross-attention decoder is no oracle; we check the properties a decoder must have instead."""
    torch.manual_seed(0)
    config = bigbird.BigBirdConfig(**tiny_config(is_decoder=True, add_cross_attention=True))
    model = bigbird.BigBirdForCausalLM(config).eval()
    ids = torch.randint(5, 60, (1, 20))
    encoder = torch.randn(1, 9, 32)
    with torch.no_grad():
        full = model(ids, encoder_hidden_states=encoder).logits
        prefix = model(ids[:, :12], encoder_hidden_states=encoder).logits
        other = model(ids, encoder_hidden_states=encoder + 1).logits
    assert (full[:, :12] - prefix).abs().max() <= TOL
    assert (full - other).abs().max() > 1e-3


@pytest.mark.parametrize("kernel", ["sdpa", "onednn"])
def test_causal_lm_cross_attention_on_the_cache_matches_the_full_pass(kernel, monkeypatch):
    """Token by token on the KV cache (cross-attention keys/values computed once, packed when forced) gives the
    logits of one pass over the whole sequence, with the encoder's padding masked."""
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", kernel)
    torch.manual_seed(0)
    model = bigbird.BigBirdForCausalLM(bigbird.BigBirdConfig(**tiny_config(is_decoder=True, add_cross_attention=True)))
    model.eval()
    ids = torch.randint(5, 60, (2, 6))
    encoder, encoder_mask = torch.randn(2, 9, 32), torch.ones(2, 9, dtype=torch.long)
    encoder_mask[1, 6:] = 0
    kwargs = {"encoder_hidden_states": encoder, "encoder_attention_mask": encoder_mask}
    with torch.no_grad():
        full = model(ids, **kwargs).logits
        cache, steps = None, []
        for t in range(ids.shape[1]):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True, **kwargs)
            cache = out.past_key_values
            steps.append(out.logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= TOL
    packs = kernel == "onednn" and private_ops.private_op("conv-packed") is not None
    assert all(kept.packed == packs for kept in cache.cross)


@pytest.mark.parametrize("name", CLASSES)
def test_round_trip_ours_to_transformers(name, tmp_path):
    torch.manual_seed(3)
    config = bigbird.BigBirdConfig(**tiny_config(is_decoder=name == "BigBirdForCausalLM"))
    ours = getattr(bigbird, name)(config).eval()
    ours.save_pretrained(tmp_path)
    ref = getattr(transformers, name).from_pretrained(tmp_path).eval()
    inputs = make_inputs(name, 203)
    with torch.no_grad():
        assert assert_outputs_match(ref(**inputs), ours(**inputs))
    back = getattr(bigbird, name).from_pretrained(tmp_path)
    with torch.no_grad():
        assert assert_outputs_match(ref(**inputs), back(**inputs))


@pytest.mark.parametrize("name", CLASSES)
def test_name_table_round_trip(name):
    """ours → checkpoint names are exactly transformers' parameter names, and translate back to ours."""
    config = tiny_config(is_decoder=name == "BigBirdForCausalLM")
    ours = getattr(bigbird, name)(bigbird.BigBirdConfig(**config))
    ref = getattr(transformers, name)(transformers.BigBirdConfig(**config))
    ours_to_theirs = checkpoint_state_dict(ours)
    ref_names = {k for k in ref.state_dict() if not k.endswith((".position_ids", ".token_type_ids"))}
    tied_in_ref = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert set(ours_to_theirs) == ref_names - tied_in_ref
    for our_name in ours.state_dict():
        theirs = translate(our_name, BIGBIRD_TABLE)
        assert translate(theirs, BIGBIRD_TABLE, to_checkpoint=False) == our_name


def test_feed_forward_in_token_slices_keeps_parity(monkeypatch, tmp_path):
    """Long inputs run the feed-forward in token slices; forced here on a short input, the outputs still match."""
    ref, ours = reference_and_ours("BigBirdForMaskedLM", tmp_path)
    inputs = make_inputs("BigBirdForMaskedLM", 203)
    with torch.no_grad():
        ref_out = ref(**inputs)
        whole = ours(**inputs)
        monkeypatch.setattr(bigbird.models.modeling, "FFN_SLICE_ELEMENTS", 2 * 48 * 7)  # 7 tokens per slice
        sliced = ours(**inputs)
    assert (sliced.logits - whole.logits).abs().max() < 1e-5
    assert_outputs_match(ref_out, sliced)


@pytest.mark.parametrize("family", ["bigbird", "pegasus"])
def test_an_unknown_attention_type_is_refused(family, tmp_path):
    """As the reference refuses it; it ran full attention on every input, silently."""
    from bigbird.models.config import ConfigError

    config_class = bigbird.BigBirdConfig if family == "bigbird" else bigbird.BigBirdPegasusConfig
    model_class = bigbird.BigBirdModel if family == "bigbird" else bigbird.BigBirdPegasusModel
    with pytest.raises(ValueError, match="attention_type must be one of .*not 'sparse'"):
        model_class(config_class(attention_type="sparse", num_hidden_layers=1, encoder_layers=1, decoder_layers=1))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": config_class.model_type, "attention_type": "x"}))
    with pytest.raises(ConfigError, match="attention_type must be block_sparse or original_full, not 'x'"):
        config_class.from_json_file(tmp_path / "config.json")


@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize(
    "name", ["BigBirdForMaskedLM", "BigBirdForSequenceClassification", "BigBirdForQuestionAnswering"]
)
def test_return_dict_false_gives_the_reference_tuple(name, with_labels, tmp_path):
    ref, ours = reference_and_ours(name, tmp_path)
    inputs = make_inputs(name, 40)
    inputs |= labels_for(name, inputs) if with_labels else {}
    with torch.no_grad():
        theirs, mine = ref(**inputs, return_dict=False), ours(**inputs, return_dict=False)
    assert isinstance(mine, tuple) and len(mine) == len(theirs)
    for a, b in zip(theirs, mine, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours(**inputs)[0], theirs[0], atol=1e-4, rtol=1e-4)


def test_a_head_refuses_keyword_arguments_it_would_drop(tmp_path):
    """`attn_mask=` for `attention_mask=` used to leave the padding attended, silently."""
    model = bigbird.BigBirdForMaskedLM(bigbird.BigBirdConfig(**tiny_config()))
    ids = torch.randint(5, 100, (1, 20))
    for name in ("attn_mask", "head_mask"):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
            model(ids, **{name: torch.ones(1, 20)})


def test_misuse_is_one_clear_error():
    """encoder_hidden_states on a model without cross-attention was an AttributeError about BigBirdLayer.cross;
    quantize_int8 on torch's own nn.Linear handed the model back unchanged, looking quantized."""
    model = bigbird.BigBirdModel(bigbird.BigBirdConfig(**tiny_config()))
    ids = torch.randint(5, 100, (1, 20))
    with pytest.raises(ValueError, match="add_cross_attention=True"):
        model(ids, encoder_hidden_states=torch.zeros(1, 5, 32))
    with pytest.raises(ValueError, match="has no core Linear layer"):
        bigbird.quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(TypeError, match="not str"):
        bigbird.quantize_int8("google/bigbird-roberta-base")


@pytest.mark.parametrize(
    "name",
    [
        "BigBirdForMaskedLM",
        "BigBirdForSequenceClassification",
        "BigBirdForQuestionAnswering",
        "BigBirdForMultipleChoice",
        "BigBirdForTokenClassification",
        "BigBirdForPreTraining",
    ],
)
def test_int32_labels_give_the_int64_loss(name, tmp_path):
    """The reference takes them; the loss raised 'expected scalar type Long' here."""
    ref, ours = reference_and_ours(name, tmp_path)
    inputs = make_inputs(name, 40)
    labels = labels_for(name, inputs)
    narrow = {key: value.to(torch.int32) for key, value in labels.items()}
    with torch.no_grad():
        expected = ref(**inputs, **labels).loss
        torch.testing.assert_close(ours(**inputs, **narrow).loss, expected, atol=1e-4, rtol=1e-4)


def assert_extra_outputs_match(ref_out, our_out) -> int:
    """Every tuple of per-layer tensors the reference returned (hidden states, attentions), returned by us too,
    as many, of the same shape; the hidden states equal within TOL. Returns how many tuples were compared."""
    compared = 0
    for key, theirs in ref_out.items():
        if not (isinstance(theirs, tuple) and theirs and isinstance(theirs[0], torch.Tensor)):
            continue
        mine = our_out[key]
        assert isinstance(mine, tuple) and len(mine) == len(theirs), key
        for a, b in zip(theirs, mine, strict=True):
            assert a.shape == b.shape, key
            if "hidden_states" in key:
                assert (a - b).abs().max() <= TOL, key
        compared += 1
    return compared


@pytest.mark.parametrize("source", ["config.json", "keyword"])
@pytest.mark.parametrize("name", CLASSES)
def test_config_output_options_are_honoured(name, source, tmp_path):
    """The seed: hidden states and attentions are returned "when output_hidden_states=True is passed or when
    config.output_hidden_states=True"; the config fields were kept but never read, so nothing came back."""
    options = {"output_hidden_states": True, "output_attentions": True}
    # The decoder's inputs are short: full attention, where the reference's block-sparse fallback returns none.
    layout = {"attention_type": "original_full"} if name == "BigBirdForCausalLM" else {}
    ref_config = transformers.BigBirdConfig(**tiny_config(**layout, **(options if source == "config.json" else {})))
    ref_config.is_decoder = name == "BigBirdForCausalLM"
    getattr(transformers, name)(ref_config).save_pretrained(tmp_path)
    overrides = options if source == "keyword" else {}
    ref = getattr(transformers, name).from_pretrained(tmp_path, **overrides).eval()
    ours = getattr(bigbird, name).from_pretrained(tmp_path, **overrides)
    inputs = make_inputs(name, 200)  # block-sparse (on a short input the reference's attentions come back empty)
    with torch.no_grad():
        ref_out, our_out = ref(**inputs), ours(**inputs)
        assert assert_extra_outputs_match(ref_out, our_out) == 2
        # An argument still wins over the config.
        plain = ours(**inputs, output_hidden_states=False, output_attentions=False)
    assert plain.hidden_states is None and plain.attentions is None


@pytest.mark.parametrize("name", ["BigBirdForMaskedLM", "BigBirdForQuestionAnswering"])
def test_config_return_dict_false_gives_the_reference_tuple(name, tmp_path):
    """config.return_dict=False: the model the user calls returns the tuple the reference gives for
    return_dict=False (a head still reads its inner model's outputs by name), and an argument wins over the
    config. The reference itself, given the config field, fails in its heads (they read the inner model's tuple
    by name), so the tuple is taken from it with the argument."""
    ref, _ = reference_and_ours(name, tmp_path)
    ours = getattr(bigbird, name).from_pretrained(tmp_path, return_dict=False)
    inputs = make_inputs(name, 40)
    with torch.no_grad():
        theirs, mine = ref(**inputs, return_dict=False), ours(**inputs)
        assert isinstance(theirs, tuple) and isinstance(mine, tuple) and len(mine) == len(theirs)
        for a, b in zip(theirs, mine, strict=True):
            torch.testing.assert_close(b, a, atol=TOL, rtol=TOL)
        assert not isinstance(ours(**inputs, return_dict=True), tuple)
