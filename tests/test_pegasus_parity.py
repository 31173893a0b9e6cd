"""Parity of the BigBirdPegasus family with transformers 5.23.0, computed in the same run on tiny random models.

Models are built with random weights on our side, saved in the Hub layout and read by transformers (and the other
way round), so every comparison is also a checkpoint round trip.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import bigbird
from bigbird.models.checkpoints import PEGASUS_TABLE, checkpoint_state_dict, translate
from bigbird.models.generation import DecoderCache

CLASSES = [
    "BigBirdPegasusModel",
    "BigBirdPegasusForConditionalGeneration",
    "BigBirdPegasusForSequenceClassification",
    "BigBirdPegasusForQuestionAnswering",
    "BigBirdPegasusForCausalLM",
]
OUTPUT_NAMES = ["last_hidden_state", "encoder_last_hidden_state", "logits", "start_logits", "end_logits", "loss"]
TOL = 1e-4
EOS = 1
PAD = 0

transformers.logging.set_verbosity_error()  # the reference warns about block padding and attention fallbacks


# Tiny models gain nothing from threads (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> dict:
    """A small BigBirdPegasus: 8-token blocks and one random block, so 57+ tokens run block-sparse attention."""
    base = dict(
        vocab_size=100,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=256,
        block_size=8,
        num_random_blocks=1,
        dropout=0.0,
        init_std=0.2,  # larger than the default so that differences would show
        num_labels=3,
    )
    return {**base, **overrides}


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter (norms and biases included) and the logits bias, so nothing sits at its init value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        bias = getattr(model, "final_logits_bias", None)
        if bias is not None:
            bias.copy_(torch.randn(bias.shape, generator=g))


def ours_and_reference(name: str, tmp_path, seed: int = 0, **config):
    """Our random model, saved in the Hub layout and loaded by transformers."""
    torch.manual_seed(seed)
    ours = getattr(bigbird, name)(bigbird.BigBirdPegasusConfig(**tiny_config(**config))).eval()
    randomize(ours, seed)
    ours.save_pretrained(tmp_path)
    return ours, getattr(transformers, name).from_pretrained(tmp_path).eval()


def reference_and_ours(name: str, tmp_path, seed: int = 0, **config):
    """A random transformers model, saved in the Hub layout and loaded by us."""
    torch.manual_seed(seed)
    ref = getattr(transformers, name)(transformers.BigBirdPegasusConfig(**tiny_config(**config))).eval()
    randomize(ref, seed)
    ref.save_pretrained(tmp_path)
    return ref, getattr(bigbird, name).from_pretrained(tmp_path)


def make_inputs(name: str, seq_len: int, batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """A padded batch: the last row ends early. Every row has two </s> (the classifier reads the last one)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (batch, seq_len), generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    end = seq_len - seq_len // 3
    mask[-1, end:] = 0
    ids[-1, end:] = PAD
    ids[:, 5] = EOS
    ids[:-1, -1] = EOS
    ids[-1, end - 1] = EOS
    if name == "BigBirdPegasusForCausalLM":
        return {"input_ids": ids[:, :23], "attention_mask": torch.ones(batch, 23, dtype=torch.long)}
    return {"input_ids": ids, "attention_mask": mask}


def labels_for(name: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ids = inputs["input_ids"]
    if name == "BigBirdPegasusForConditionalGeneration":
        labels = (ids[:, :17] * 7) % 100
        labels[0, -3:] = -100
        return {"labels": labels}
    if name == "BigBirdPegasusForCausalLM":
        return {"labels": ids.roll(-1, dims=1)}
    if name == "BigBirdPegasusForSequenceClassification":
        return {"labels": torch.tensor([2, 0])}
    if name == "BigBirdPegasusForQuestionAnswering":
        return {"start_positions": torch.tensor([9, 12]), "end_positions": torch.tensor([11, 20])}
    return {}


def assert_outputs_match(ref_out, our_out) -> dict[str, float]:
    """Max |diff| per output present in both; fails beyond TOL."""
    diffs = {}
    for key in OUTPUT_NAMES:
        theirs = getattr(ref_out, key, None)
        if theirs is None:
            continue
        ours = our_out[key]
        assert ours is not None, f"{key} missing from our outputs"
        assert ours.shape == theirs.shape, key
        diffs[key] = (ours - theirs).abs().max().item()
        assert diffs[key] <= TOL, f"{key}: max |diff| {diffs[key]}"
    return diffs


@pytest.mark.parametrize("seq_len", [61, 75])
@pytest.mark.parametrize("attention_type", ["block_sparse", "original_full"])
@pytest.mark.parametrize("name", CLASSES)
def test_parity_all_classes(name, attention_type, seq_len, tmp_path):
    ours, ref = ours_and_reference(name, tmp_path, attention_type=attention_type)
    inputs = make_inputs(name, seq_len)
    for labels in ({}, labels_for(name, inputs)):
        with torch.no_grad():
            diffs = assert_outputs_match(ref(**inputs, **labels), ours(**inputs, **labels))
        assert len(diffs) >= 1
    assert "loss" in diffs or name == "BigBirdPegasusModel"
    if attention_type == "block_sparse" and name != "BigBirdPegasusForCausalLM":
        assert getattr(ours, "model", ours).encoder.uses_sparse(seq_len)


@pytest.mark.parametrize("name", CLASSES)
def test_parity_reference_checkpoint_loaded_by_us(name, tmp_path, fast_paths):
    """Also with torch's private fast ops off: the public paths they fall back to keep parity too."""
    ref, ours = reference_and_ours(name, tmp_path, seed=3)
    inputs = make_inputs(name, 67)
    labels = labels_for(name, inputs)
    with torch.no_grad():
        assert_outputs_match(ref(**inputs, **labels), ours(**inputs, **labels))


def test_short_input_falls_back_to_full_attention_per_call(tmp_path):
    """A block-sparse model given a short input runs full attention for that call only (the reference switches
    for good, so it is compared on a fresh copy per length)."""
    ours, _ = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path)
    for seq_len in (37, 67):
        ref = transformers.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path).eval()
        inputs = make_inputs("BigBirdPegasusForConditionalGeneration", seq_len)
        with torch.no_grad():
            assert_outputs_match(ref(**inputs), ours(**inputs))
    assert not ours.model.encoder.uses_sparse(37) and ours.model.encoder.uses_sparse(67)


@pytest.mark.parametrize("attention_type", ["block_sparse", "original_full"])
def test_parity_hidden_states_and_attentions(attention_type, tmp_path):
    ours, ref = ours_and_reference("BigBirdPegasusModel", tmp_path, attention_type=attention_type)
    inputs = make_inputs("BigBirdPegasusModel", 61)
    with torch.no_grad():
        ref_out = ref(**inputs, output_hidden_states=True, output_attentions=True)
        our_out = ours(**inputs, output_hidden_states=True, output_attentions=True)
    for key in ("encoder_hidden_states", "decoder_hidden_states"):
        assert len(our_out[key]) == len(ref_out[key])
        for theirs, mine in zip(ref_out[key], our_out[key], strict=True):
            # The reference keeps its block padding on intermediate encoder states; we cut it off.
            assert (theirs[:, : mine.shape[1]] - mine).abs().max() <= TOL
    for key in ("decoder_attentions", "cross_attentions"):
        for theirs, mine in zip(ref_out[key], our_out[key], strict=True):
            assert theirs.shape == mine.shape and (theirs - mine).abs().max() <= TOL
    # Encoder probabilities are compared on real query rows (a padded query's row is unused and differs).
    for theirs, mine in zip(ref_out.encoder_attentions, our_out.encoder_attentions, strict=True):
        assert theirs.shape == mine.shape
        valid = torch.nn.functional.pad(inputs["attention_mask"], (0, theirs.shape[-1] - 61)).bool()
        rows = valid[:, None, :, None].expand_as(theirs)
        assert (theirs - mine).abs()[rows].max() <= TOL


def test_parity_embeds_decoder_mask_and_encoder_outputs(tmp_path):
    ours, ref = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path)
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 67)
    dec = torch.randint(3, 100, (2, 9))
    dec_mask = torch.ones(2, 9, dtype=torch.long)
    dec_mask[1, 6:] = 0
    embeds = ours.model.encoder.tokens(inputs["input_ids"]).detach() * ours.model.encoder.scale
    with torch.no_grad():
        for kwargs in (
            {"input_ids": inputs["input_ids"], "decoder_input_ids": dec, "decoder_attention_mask": dec_mask},
            {"inputs_embeds": embeds, "decoder_input_ids": dec},
        ):
            assert_outputs_match(
                ref(attention_mask=inputs["attention_mask"], **kwargs),
                ours(attention_mask=inputs["attention_mask"], **kwargs),
            )
        encoded = ours.model.encoder(**inputs).last_hidden_state
        assert_outputs_match(
            ref(attention_mask=inputs["attention_mask"], encoder_outputs=(encoded,), decoder_input_ids=dec),
            ours(attention_mask=inputs["attention_mask"], encoder_outputs=(encoded,), decoder_input_ids=dec),
        )


def test_incremental_decoding_matches_full_decoding(tmp_path):
    """Token-by-token decoding on the cache gives the logits of one full pass (ours and the reference's)."""
    ours, ref = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path)
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 61)
    dec = torch.randint(3, 100, (2, 7))
    with torch.no_grad():
        full = ref(**inputs, decoder_input_ids=dec).logits
        cache, steps = None, []
        for t in range(dec.shape[1]):
            out = ours(**inputs, decoder_input_ids=dec[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        # Two tokens at once on a warm cache: the causal mask is offset by the cached length.
        out = ours(**inputs, decoder_input_ids=dec[:, :5])
        chunk = ours(**inputs, decoder_input_ids=dec[:, 5:], past_key_values=out.past_key_values, use_cache=True)
    assert isinstance(cache, DecoderCache) and cache.length == dec.shape[1]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= TOL
    assert (torch.cat([out.logits, chunk.logits], dim=1) - full).abs().max() <= TOL


def test_beams_share_encoder_rows(tmp_path):
    """g decoder rows per encoder row (beams) give the result of repeating the encoder output g times."""
    ours, ref = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path)
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 61)
    encoded = ours.model.encoder(**inputs).last_hidden_state
    dec = torch.randint(3, 100, (6, 4))
    with torch.no_grad():
        shared = ours(attention_mask=inputs["attention_mask"], encoder_outputs=(encoded,), decoder_input_ids=dec)
        repeated = ref(
            attention_mask=inputs["attention_mask"].repeat_interleave(3, dim=0),
            encoder_outputs=(encoded.repeat_interleave(3, dim=0),),
            decoder_input_ids=dec,
        )
    assert (shared.logits - repeated.logits).abs().max() <= TOL
    assert shared.past_key_values.cross[0].inputs == 2  # cross-attention K/V per input, not per beam


def test_checkpoint_names_match_the_reference(tmp_path):
    for name in CLASSES:
        ours = getattr(bigbird, name)(bigbird.BigBirdPegasusConfig(**tiny_config()))
        ref = getattr(transformers, name)(transformers.BigBirdPegasusConfig(**tiny_config()))
        ours.save_pretrained(tmp_path / name)
        ref.save_pretrained(tmp_path / f"ref-{name}")
        from safetensors import safe_open

        with safe_open(str(tmp_path / f"ref-{name}" / "model.safetensors"), "pt") as f:
            reference_names = set(f.keys())
        assert set(checkpoint_state_dict(ours)) == reference_names, name
    assert translate("model.decoder.layers.1.cross.key.weight", PEGASUS_TABLE) == (
        "model.decoder.layers.1.encoder_attn.k_proj.weight"
    )


def test_tied_embeddings_and_old_checkpoints_with_copies(tmp_path):
    """Embeddings and LM head share one matrix; a checkpoint storing the copies (and no `shared`) loads too."""
    ours, ref = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path)
    shared = ours.model.shared.weight
    assert ours.lm_head.weight is shared
    assert ours.model.encoder.tokens.weight is shared and ours.model.decoder.tokens.weight is shared

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    weight = tensors.pop("model.shared.weight")
    tensors["model.encoder.embed_tokens.weight"] = weight
    tensors["model.decoder.embed_tokens.weight"] = weight.clone()
    tensors["lm_head.weight"] = weight.clone()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = bigbird.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path)
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 61)
    with torch.no_grad():
        assert_outputs_match(ref(**inputs), loaded(**inputs))


def test_generation_config_json_overrides_config(tmp_path):
    ours, _ = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path, num_beams=1, max_length=30)
    written = json.loads((tmp_path / "generation_config.json").read_text())
    assert written["max_length"] == 30 and written["decoder_start_token_id"] == 2
    (tmp_path / "generation_config.json").write_text(json.dumps({**written, "num_beams": 3, "max_length": 9}))
    loaded = bigbird.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.num_beams == 3 and loaded.config.max_length == 9
    ref = transformers.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path).eval()
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 61)
    assert torch.equal(loaded.generate(**inputs), ref.generate(**inputs))


def test_encoder_feed_forward_in_token_slices_keeps_parity(monkeypatch, tmp_path):
    """Long inputs run the encoder's feed-forward in token slices; forced here on a short input."""
    ours, ref = ours_and_reference("BigBirdPegasusForConditionalGeneration", tmp_path)
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 75)
    with torch.no_grad():
        ref_out = ref(**inputs)
        monkeypatch.setattr(bigbird.models.modeling, "FFN_SLICE_ELEMENTS", 2 * 48 * 5)  # 5 tokens per slice
        assert_outputs_match(ref_out, ours(**inputs))


@pytest.mark.parametrize("source", ["config.json", "keyword"])
@pytest.mark.parametrize("name", CLASSES)
def test_config_output_options_are_honoured(name, source, tmp_path):
    """The seed: every layer's states and attentions come back "when output_hidden_states=True is passed or when
    config.output_hidden_states=True"; the config fields were kept but never read, so nothing came back."""
    options = {"output_hidden_states": True, "output_attentions": True}
    config = transformers.BigBirdPegasusConfig(**tiny_config(**(options if source == "config.json" else {})))
    getattr(transformers, name)(config).save_pretrained(tmp_path)
    overrides = options if source == "keyword" else {}
    ref = getattr(transformers, name).from_pretrained(tmp_path, **overrides).eval()
    ours = getattr(bigbird, name).from_pretrained(tmp_path, **overrides)
    inputs = make_inputs(name, 64)
    with torch.no_grad():
        ref_out, our_out = ref(**inputs), ours(**inputs)
        plain = ours(**inputs, output_hidden_states=False, output_attentions=False)  # an argument wins
    expected = {k for k, v in ref_out.items() if isinstance(v, tuple) and v and isinstance(v[0], torch.Tensor)}
    assert len(expected) == (2 if name == "BigBirdPegasusForCausalLM" else 5)
    for key in expected:
        theirs, mine = ref_out[key], our_out[key]
        assert isinstance(mine, tuple) and len(mine) == len(theirs), key
        for a, b in zip(theirs, mine, strict=True):
            assert a.shape[:2] == b.shape[:2], key  # intermediate encoder states: the reference keeps block padding
            if "hidden_states" in key:
                assert (a[:, : b.shape[1]] - b).abs().max() <= TOL, key
        assert plain[key] is None, key


def test_generate_ignores_the_config_output_options(tmp_path):
    """A checkpoint saved asking for every layer's outputs, and for tuples, still generates the reference's tokens:
    the steps ask for logits only."""
    config = transformers.BigBirdPegasusConfig(**tiny_config(output_hidden_states=True, output_attentions=True))
    transformers.BigBirdPegasusForConditionalGeneration(config).save_pretrained(tmp_path)
    ref = transformers.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path).eval()
    ours = bigbird.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path, return_dict=False)
    inputs = make_inputs("BigBirdPegasusForConditionalGeneration", 64)
    options = {"num_beams": 3, "max_new_tokens": 6}
    theirs = ref.generate(**inputs, **options)  # a dict of outputs: the config asks the reference for them all
    assert torch.equal(ours.generate(**inputs, **options), theirs.sequences)
