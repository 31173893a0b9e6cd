"""BigBirdForCausalLM.generate (KV cache; greedy, beam search, sampling) is token-identical to transformers 5.23.0's,
computed in the same run on tiny random models, on inputs the reference runs with full causal attention.

Prompts come unpadded and left-padded (positions then count attended tokens only, as the reference infers them);
the eos logit is biased up in some models so that rows end at different steps.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from test_bigbird_parity import tiny_config

import bigbird
from bigbird.models.generation import DecoderCache

EOS, PAD = 2, 0

# (seed, attention_type in the config, extra logit on eos)
MODELS = [(0, "original_full", 0.0), (1, "block_sparse", 2.0), (2, "original_full", 1.5)]
OPTIONS = [
    {},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
    {"min_new_tokens": 6},
    {"num_beams": 3, "length_penalty": 0.8},
    {"num_beams": 4, "num_return_sequences": 2, "early_stopping": True},
    {"do_sample": True},
    {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "num_return_sequences": 2},
    {"do_sample": True, "top_k": 8, "num_beams": 2},
]
SEEDS = [3, 4]

transformers.logging.set_verbosity_error()


# Tiny models gain nothing from threads (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"seed{m[0]}-{m[1]}-eos{m[2]:g}")
def models(request, tmp_path_factory):
    seed, attention_type, eos_bias = request.param
    torch.manual_seed(seed)
    config = bigbird.BigBirdConfig(**tiny_config(is_decoder=True, attention_type=attention_type, initializer_range=0.4))
    ours = bigbird.BigBirdForCausalLM(config).eval()
    with torch.no_grad():
        ours.lm.bias.normal_(0.0, 0.3)
        ours.lm.bias[EOS] += eos_bias
    directory = tmp_path_factory.mktemp("causal")
    ours.save_pretrained(directory)
    ref = transformers.BigBirdForCausalLM.from_pretrained(directory).eval()
    return ours, ref


def prompts(left_padded: bool, seed: int = 5) -> dict[str, torch.Tensor]:
    """Three prompts of 9 tokens; left-padded, the last two are shorter (pad tokens masked on the left)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    if left_padded:
        for row, pad in ((1, 3), (2, 5)):
            ids[row, :pad] = PAD
            mask[row, :pad] = 0
    return {"input_ids": ids, "attention_mask": mask}


def both(ours, ref, seed: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        torch.manual_seed(seed)
        mine = ours.generate(**kwargs)
        torch.manual_seed(seed)
        return mine, ref.generate(**kwargs)


@pytest.mark.parametrize("left_padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "greedy")
def test_generate_matches_reference(models, options, left_padded):
    ours, ref = models
    for seed in SEEDS if options.get("do_sample") else SEEDS[:1]:
        mine, theirs = both(ours, ref, seed, **prompts(left_padded), max_new_tokens=10, **options)
        assert mine.shape == theirs.shape and torch.equal(mine, theirs), f"\nours\n{mine}\nreference\n{theirs}"
        assert mine.shape[0] == 3 * options.get("num_return_sequences", 1)


def test_without_attention_mask_pad_tokens_are_masked(models):
    """As the reference, a prompt holding pad tokens (pad is no eos) gets them masked."""
    ours, ref = models
    mine, theirs = both(ours, ref, 0, input_ids=prompts(left_padded=True)["input_ids"], max_length=16)
    assert torch.equal(mine, theirs)


def test_cached_steps_equal_the_full_forward(models):
    """Logits of one token at a time over the cache equal those of one forward over the whole sequence."""
    ours, _ = models
    inputs = prompts(left_padded=False)
    ids = inputs["input_ids"]
    with torch.no_grad():
        full = ours(ids).logits
        cache = DecoderCache(ours.num_cache_layers)
        first = ours(ids[:, :5], past_key_values=cache, use_cache=True).logits
        steps = [ours(ids[:, k : k + 1], past_key_values=cache, use_cache=True).logits for k in range(5, 9)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 9


def test_an_encoder_config_generates_from_a_prompt_long_enough_for_block_sparse():
    """A config without is_decoder runs the prompt block-sparse, padded to whole blocks: the cache kept the padding,
    and the next step was fed nothing (IndexError). The first token is still the forward's argmax."""
    torch.manual_seed(0)
    config = bigbird.BigBirdConfig(**tiny_config(is_decoder=False, attention_type="block_sparse"))
    model = bigbird.BigBirdForCausalLM(config).eval()
    prompt = torch.randint(5, 60, (2, 203))
    assert model.bert.uses_sparse(203) and 203 % config.block_size
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=3, min_new_tokens=3)
        first = model(prompt).logits[:, -1].argmax(-1)
    assert out.shape == (2, 206) and torch.equal(out[:, :203], prompt) and torch.equal(out[:, 203], first)


def test_a_bfloat16_causal_lm_generates_through_its_float32_cache(monkeypatch):
    """BigBird's decoder attends through the cache as Pegasus's does: a bfloat16 model's cache holds float32 on the
    CPU (see DecoderCache), and each cached step's logits stay those of the whole sequence's forward pass.

    One matmul kernel for every shape: measured choices may give a step's rows and the whole pass's different
    kernels, whose bfloat16 roundings alone come near the tolerance (0.047 of it seen, and past it under load)."""
    monkeypatch.setenv("BIGBIRD_KERNELS", "mkl")
    torch.manual_seed(0)
    model = bigbird.BigBirdForCausalLM(bigbird.BigBirdConfig(**tiny_config(is_decoder=True))).eval().to(torch.bfloat16)
    prompt = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=4, min_new_tokens=4)
        cache, steps = DecoderCache(model.num_cache_layers), []
        steps.append(model(out[:, :9], past_key_values=cache, use_cache=True).logits[:, -1])
        for t in range(9, out.shape[1]):
            steps.append(model(out[:, t : t + 1], past_key_values=cache, use_cache=True).logits[:, -1])
        whole = model(out).logits[:, 8:]
    assert out.shape == (2, 13) and all(k.dtype == torch.float32 for k in cache.keys)
    assert torch.allclose(torch.stack(steps, 1).float(), whole.float(), atol=0.05, rtol=0.02)
