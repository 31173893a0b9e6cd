"""`generate` is token-identical to transformers 5.23.0's on tiny random BigBirdPegasus models (same run).

Models come in four variants (seed × encoder attention × end-of-sequence bias × embedding scale): with the eos token's
logit biased up, rows of a batch end at different steps, so finished rows, padding and finished beam hypotheses are
exercised. Unscaled token embeddings and larger weights keep the random models from repeating one token forever.
"""

from __future__ import annotations

import time

import pytest
import torch
import transformers
from test_pegasus_parity import randomize, tiny_config

import bigbird
from bigbird.models import generation, linear, private_ops
from bigbird.models.generation import DecoderCache
from bigbird.models.linear import Linear

EOS, PAD, START = 1, 0, 2

# (seed, encoder attention, extra logit on eos, scale_embedding)
MODELS = [
    (0, "block_sparse", 0.0, False),
    (1, "original_full", 2.0, False),
    (2, "block_sparse", 2.0, False),
    (3, "original_full", 0.0, True),
]
GREEDY = [
    {},
    {"no_repeat_ngram_size": 2},
    {"repetition_penalty": 1.4},
    {"min_length": 8},
    {"max_new_tokens": 10, "min_new_tokens": 5},
    {"forced_eos_token_id": EOS},
]
BEAM = [
    {"num_beams": 2, "length_penalty": 0.6},
    {"num_beams": 3, "length_penalty": 1.2, "no_repeat_ngram_size": 3},
    {"num_beams": 4, "length_penalty": 0.8, "min_length": 7, "num_return_sequences": 2},
    {"num_beams": 5, "length_penalty": 1.0, "early_stopping": True},
    {"num_beams": 5, "length_penalty": 1.1, "early_stopping": "never", "no_repeat_ngram_size": 2, "min_new_tokens": 4},
    {"num_beams": 3, "length_penalty": 0.7, "repetition_penalty": 1.3, "forced_eos_token_id": EOS},
    {"num_beams": 4, "length_penalty": 0.9, "num_return_sequences": 4, "max_new_tokens": 6},
]
# Sampling and beam sampling: the warpers alone and together, with the processors, several samples per input.
SAMPLING = [
    {"do_sample": True},  # the reference's default top_k=50
    {"do_sample": True, "temperature": 0.7, "top_k": 0},
    {"do_sample": True, "temperature": 1.5, "top_k": 10},
    {"do_sample": True, "top_p": 0.8, "top_k": 0},
    {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "num_return_sequences": 3},
    {"do_sample": True, "top_p": 0.95, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 4},
    {"do_sample": True, "num_beams": 3, "top_k": 10, "length_penalty": 0.8},
    {"do_sample": True, "num_beams": 2, "temperature": 0.9, "top_p": 0.9, "num_return_sequences": 2},
]
SAMPLING_SEEDS = [0, 17]
MAX_LENGTH = 16

transformers.logging.set_verbosity_error()


# Tiny models gain nothing from threads (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


class Pair:
    """Our model and the reference loaded from our checkpoint."""

    def __init__(self, ours, ref, attention_type: str) -> None:
        self.ours, self.ref, self.attention_type = ours, ref, attention_type

    def both(self, seed: int | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Both models' generate; with `seed`, each starts from torch.manual_seed(seed) (the same draws)."""
        # The reference switches its encoder to full attention for good after a short input: switch it back.
        self.ref.model.encoder.set_attention_type(self.attention_type)
        with torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            ours = self.ours.generate(**kwargs)
            if seed is not None:
                torch.manual_seed(seed)
            return ours, self.ref.generate(**kwargs)


def make_pair(directory, seed: int, attention_type: str, eos_bias: float, **config) -> Pair:
    torch.manual_seed(seed)
    settings = tiny_config(**{"attention_type": attention_type, "scale_embedding": False, "init_std": 0.4, **config})
    ours = bigbird.BigBirdPegasusForConditionalGeneration(bigbird.BigBirdPegasusConfig(**settings)).eval()
    randomize(ours, seed)
    with torch.no_grad():
        ours.final_logits_bias.mul_(0.3)
        ours.final_logits_bias[0, EOS] += eos_bias
    ours.save_pretrained(directory)
    ref = transformers.BigBirdPegasusForConditionalGeneration.from_pretrained(directory).eval()
    return Pair(ours, ref, attention_type)


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"seed{m[0]}-{m[1]}-eos{m[2]:g}-scale{m[3]:d}")
def pair(request, tmp_path_factory) -> Pair:
    seed, attention_type, eos_bias, scale = request.param
    pair = make_pair(tmp_path_factory.mktemp("gen"), seed, attention_type, eos_bias, scale_embedding=scale)
    pair.eos_bias = eos_bias
    return pair


def batch_inputs(seed: int = 5, lengths=(61, 47, 30)) -> dict[str, torch.Tensor]:
    """Three right-padded rows of different lengths; the longest runs block-sparse attention."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, 100, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = PAD
        ids[row, n - 1] = EOS
    return {"input_ids": ids, "attention_mask": mask}


def rows_ending_early(seqs: torch.Tensor) -> int:
    """Rows whose first eos comes before the last column (padding follows it)."""
    is_eos = seqs[:, 1:] == EOS
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, seqs.shape[1])
    return int((first < seqs.shape[1] - 1).sum())


@pytest.mark.parametrize("options", GREEDY, ids=lambda o: "greedy-" + "-".join(f"{k}={v}" for k, v in o.items()))
def test_greedy_matches_reference(pair, options):
    ours, theirs = pair.both(**batch_inputs(), **{"max_length": MAX_LENGTH, **options})
    assert ours.shape == theirs.shape and torch.equal(ours, theirs), f"\nours\n{ours}\nreference\n{theirs}"
    assert (ours[:, 0] == START).all()
    if pair.eos_bias and "min_length" not in options and "min_new_tokens" not in options:
        assert rows_ending_early(ours) >= 1


@pytest.mark.parametrize("options", BEAM, ids=lambda o: "beam-" + "-".join(f"{k}={v}" for k, v in o.items()))
def test_beam_search_matches_reference(pair, options):
    ours, theirs = pair.both(**batch_inputs(), **{"max_length": MAX_LENGTH, **options})
    assert ours.shape == theirs.shape and torch.equal(ours, theirs), f"\nours\n{ours}\nreference\n{theirs}"
    assert ours.shape[0] == 3 * options.get("num_return_sequences", 1)


@pytest.mark.parametrize("options", [GREEDY[0], BEAM[3]], ids=["greedy", "beam"])
def test_packed_weights_and_keys_values_generate_the_reference_tokens(options, tmp_path, monkeypatch):
    """Every untied layer on packed weights (one copy, as decoder steps choose on most CPUs) and cross-attention
    on packed keys/values, over padded inputs of different lengths: same tokens."""
    monkeypatch.setenv("BIGBIRD_KERNELS", "onednn-packed")
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "onednn")
    kept = []
    cross_kv = DecoderCache.cross_kv
    monkeypatch.setattr(DecoderCache, "cross_kv", lambda self, *a: kept.append(cross_kv(self, *a)) or kept[-1])
    pair = make_pair(tmp_path, 3, "block_sparse", 2.0)
    ours, theirs = pair.both(**batch_inputs(), **{"max_length": MAX_LENGTH, **options})
    assert torch.equal(ours, theirs), f"\nours\n{ours}\nreference\n{theirs}"
    layers = [m for m in pair.ours.modules() if isinstance(m, Linear)]
    if private_ops.private_op("linear-packed") is not None:  # else every layer stays on the public path
        assert all(layer.packed != layer.shares_weight for layer in layers)
    assert kept and all(kv.packed == (private_ops.private_op("conv-packed") is not None) for kv in kept)


@pytest.mark.parametrize("seed", SAMPLING_SEEDS)
@pytest.mark.parametrize("options", SAMPLING, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sampling_matches_reference_under_the_same_seed(pair, options, seed):
    """Same processors and warpers in the same order and the same multinomial draws: the same tokens."""
    ours, theirs = pair.both(seed=seed, **batch_inputs(), **{"max_length": MAX_LENGTH, **options})
    assert ours.shape == theirs.shape and torch.equal(ours, theirs), f"\nours\n{ours}\nreference\n{theirs}"
    assert ours.shape[0] == 3 * options.get("num_return_sequences", 1)


def test_sampling_draws_differ_by_seed(tmp_path):
    """The sampling tests above compare real draws: other seeds give other tokens, and none is the greedy path."""
    pair = make_pair(tmp_path, seed=8, attention_type="original_full", eos_bias=0.0)
    inputs = {**batch_inputs(), "max_length": MAX_LENGTH}
    greedy = pair.ours.generate(**inputs)
    samples = []
    for seed in range(4):
        torch.manual_seed(seed)
        samples.append(pair.ours.generate(**inputs, do_sample=True, top_k=0))
    assert len({tuple(s.flatten().tolist()) for s in samples}) == 4
    assert all(not torch.equal(s, greedy) for s in samples)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generators_make_each_input_independent_of_its_batch(tmp_path, num_beams):
    """With one generator per input, an input's tokens don't depend on the other rows of its batch."""
    pair = make_pair(tmp_path, seed=9, attention_type="original_full", eos_bias=1.0)
    inputs = batch_inputs(seed=3)
    others = batch_inputs(seed=4)  # same lengths, other tokens in rows 1 and 2
    others["input_ids"][0] = inputs["input_ids"][0]
    options = {"max_length": MAX_LENGTH, "do_sample": True, "num_beams": num_beams, "num_return_sequences": 2}

    def run(batch: dict, seeds: list[int]) -> torch.Tensor:
        torch.manual_seed(99)  # the global generator must not matter
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return pair.ours.generate(**batch, generators=generators, **options)

    first = run(inputs, [5, 6, 7])
    again = run(others, [5, 60, 70])
    width = min(first.shape[1], again.shape[1])
    assert torch.equal(first[:2, :width], again[:2, :width])
    assert not torch.equal(first[2:4, :width], again[2:4, :width])
    alone = run({k: v[:1, :61] for k, v in inputs.items()}, [5])
    assert torch.equal(alone, first[:2, : alone.shape[1]])


@pytest.mark.parametrize("num_beams", [1, 4])
def test_one_row_finishes_early(tmp_path, num_beams):
    """With a strong eos bias some rows end while others go on: they are padded, and the tokens still match."""
    pair = make_pair(tmp_path, seed=7, attention_type="block_sparse", eos_bias=4.0)
    inputs = batch_inputs(seed=11)
    ours, theirs = pair.both(**inputs, max_length=24, num_beams=num_beams, length_penalty=0.8)
    assert torch.equal(ours, theirs)
    assert 1 <= rows_ending_early(ours) < ours.shape[0] or ours.shape[1] < 24
    assert (ours == EOS).any()


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_more_seeds_mixed_settings(tmp_path, seed):
    pair = make_pair(tmp_path, seed=seed, attention_type="block_sparse", eos_bias=1.5)
    inputs = batch_inputs(seed=seed, lengths=(70, 58, 64))
    for options in (
        {"num_beams": 3, "length_penalty": 0.6, "no_repeat_ngram_size": 2, "min_length": 5},
        {"num_beams": 5, "length_penalty": 1.2},
        {"num_beams": 2, "length_penalty": 1.0, "early_stopping": True, "min_new_tokens": 3},
        {"num_beams": 1, "no_repeat_ngram_size": 3},
    ):
        ours, theirs = pair.both(**inputs, max_length=20, **options)
        assert torch.equal(ours, theirs), options


@pytest.mark.parametrize(
    "options",
    [
        {"eos_token_id": [EOS, 7]},
        {"eos_token_id": [EOS, 7], "num_beams": 3},
        {"pad_token_id": 5, "num_beams": 2},
        {"num_beams": 4, "forced_bos_token_id": 9, "repetition_penalty": 0.7},
        {"decoder_start_token_id": 4, "num_beams": 3, "length_penalty": -0.5, "early_stopping": "never"},
    ],
    ids=["two-eos-greedy", "two-eos-beams", "pad5", "forced-bos", "start4-negative-penalty-never"],
)
def test_token_options(tmp_path_factory, options):
    """Several eos ids (more candidates kept per step), another pad or start token, forced BOS, negative penalty."""
    pair = make_pair(tmp_path_factory.mktemp("tokens"), seed=2, attention_type="block_sparse", eos_bias=2.0)
    ours, theirs = pair.both(**batch_inputs(), max_length=14, **options)
    assert torch.equal(ours, theirs)


def test_defaults_come_from_the_checkpoint(tmp_path):
    """Without options, both read num_beams, length_penalty, lengths and n-gram size from the checkpoint."""
    pair = make_pair(
        tmp_path,
        seed=4,
        attention_type="block_sparse",
        eos_bias=1.0,
        num_beams=3,
        length_penalty=0.7,
        no_repeat_ngram_size=2,
        max_length=12,
        min_length=4,
    )
    ours, theirs = pair.both(**batch_inputs())
    assert torch.equal(ours, theirs) and ours.shape[1] <= 12


def test_without_attention_mask_every_token_is_attended(tmp_path):
    """Like the reference, an encoder-decoder does not infer a mask from pad tokens."""
    pair = make_pair(tmp_path, seed=5, attention_type="original_full", eos_bias=0.0)
    ours, theirs = pair.both(input_ids=batch_inputs()["input_ids"], max_length=10, num_beams=2)
    assert torch.equal(ours, theirs)


def test_cache_is_preallocated_and_cross_attention_is_shared_by_beams(tmp_path, monkeypatch):
    pair = make_pair(tmp_path, seed=6, attention_type="block_sparse", eos_bias=0.0)
    caches, grown = [], []

    class Recording(DecoderCache):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            caches.append(self)

        @staticmethod
        def _grow(old, like, size, used):
            grown.append(size)
            return DecoderCache._grow(old, like, size, used)

    monkeypatch.setattr(generation, "DecoderCache", Recording)
    inputs = batch_inputs()
    ours, theirs = pair.both(**inputs, max_length=MAX_LENGTH, num_beams=5)
    assert torch.equal(ours, theirs)
    (cache,) = caches
    layers = len(pair.ours.model.decoder.layers)
    assert grown == [MAX_LENGTH] * (2 * layers)  # keys and values of each layer, allocated once
    for keys, cross in zip(cache.keys, cache.cross, strict=True):
        assert keys.shape[0] == 3 * 5  # self-attention: one row per beam
        cross_k, cross_v = cross.plain()
        assert cross_k.shape[0] == cross_v.shape[0] == cross.inputs == 3  # cross-attention: one row per input
        assert cross_k.shape[2] == inputs["input_ids"].shape[1]


def test_cache_grows_and_reorders():
    cache = DecoderCache(num_layers=1)
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float).view(2, 1, 3, 2)
    keys, _ = cache.append(0, k, k)
    assert keys.shape == (2, 1, 3, 2) and cache.length == 3
    keys, values = cache.append(0, k[:, :, :1] + 100, k[:, :, :1] + 100)
    assert keys.shape == (2, 1, 4, 2) and torch.equal(keys[:, :, :3], k) and cache.length == 4
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.keys[0][0, :, :4], cache.keys[0][1, :, :4])
    assert torch.equal(cache.values[0][0, :, :3], k[1])


@pytest.mark.parametrize("seed", range(4))
def test_reorder_copies_only_where_rows_differ_and_matches_a_whole_copy(seed):
    """Beam-like reselections (parents repeat, rows stay, a first step of identical rows, a crop): the cache that
    copies only past the first position where lineage differs holds, bit for bit, what whole-row copies give."""
    g = torch.Generator().manual_seed(seed)
    rows, layers = 5, 2
    cache = DecoderCache(num_layers=layers)
    whole = [[torch.empty(rows, 2, 0, 3), torch.empty(rows, 2, 0, 3)] for _ in range(layers)]
    copied = 0
    for step in range(12):
        new = 3 if step == 0 else 1
        for layer in range(layers):
            k, v = (torch.randn(rows, 2, new, 3, generator=g) for _ in range(2))
            cache.append(layer, k, v)
            whole[layer] = [torch.cat([whole[layer][0], k], dim=2), torch.cat([whole[layer][1], v], dim=2)]
        if step == 5:
            cache.crop(cache.length - 1)
            whole = [[t[:, :, : cache.length] for t in pair] for pair in whole]
        # Mostly the first rows go on (as the best beams do), now and then in another order.
        order = torch.randint(0, 2 if step % 3 else rows, (rows,), generator=g)
        if step % 4 == 3:
            order = torch.arange(rows)
        before = [buffer[:, :, : cache.length].clone() for buffer in cache.keys]
        cache.reorder(order)
        after = [buffer[:, :, : cache.length] for buffer in cache.keys]
        copied += sum(int((a != b).any(dim=(1, 3)).sum()) for a, b in zip(before, after, strict=True))
        whole = [[t.index_select(0, order) for t in pair] for pair in whole]
        for layer in range(layers):
            assert torch.equal(cache.keys[layer][:, :, : cache.length], whole[layer][0])
            assert torch.equal(cache.values[layer][:, :, : cache.length], whole[layer][1])
    assert copied > 0


def test_reorder_leaves_the_positions_all_rows_share():
    """After rows take one row's past, a reorder among them copies nothing before the newest position."""
    cache = DecoderCache(num_layers=1)
    cache.append(0, torch.randn(3, 1, 4, 2), torch.randn(3, 1, 4, 2))
    cache.reorder(torch.tensor([0, 0, 0]))  # all rows now hold row 0's four positions
    cache.append(0, torch.randn(3, 1, 1, 2), torch.randn(3, 1, 1, 2))
    for row in range(3):  # mark each row's copy of the shared positions: were they copied, the marks would move
        cache.keys[0][row, :, :4] = row
    newest = cache.keys[0][:, :, 4].clone()
    cache.reorder(torch.tensor([2, 1, 0]))
    for row in range(3):
        assert (cache.keys[0][row, :, :4] == row).all()
    assert torch.equal(cache.keys[0][:, :, 4], newest.flip(0))


def test_bad_options_are_refused(tmp_path):
    pair = make_pair(tmp_path, seed=0, attention_type="original_full", eos_bias=0.0)
    ids = batch_inputs()["input_ids"]
    with pytest.raises(TypeError, match="num_beam"):
        pair.ours.generate(ids, num_beam=3)
    with pytest.raises(ValueError, match="num_return_sequences"):
        pair.ours.generate(ids, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="max_length"):
        pair.ours.generate(ids, max_length=1)
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1, not 0"):  # it named max_length
        pair.ours.generate(ids, max_new_tokens=0)
    with pytest.raises(TypeError, match="do_sample, early_stopping"):  # the message lists what is supported
        pair.ours.generate(ids, typical_p=0.5)
    with pytest.raises(ValueError, match="temperature"):
        pair.ours.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="do_sample=True"):
        pair.ours.generate(ids, num_return_sequences=2)


# --------------------------------------------------------------------------------------------------
# Continuous batching: inputs decoded together get the tokens each gets alone
# --------------------------------------------------------------------------------------------------
TOGETHER = [
    {"num_beams": 4, "length_penalty": 0.8},
    {"num_beams": 3, "no_repeat_ngram_size": 2, "num_return_sequences": 2, "min_new_tokens": 3},
    {},
    {"do_sample": True, "top_k": 20},
    {"do_sample": True, "num_beams": 2, "num_return_sequences": 2, "top_p": 0.9},
]
# Mixed source lengths: the longest run block-sparse attention, the others full attention.
TOGETHER_LENGTHS = (61, 47, 30, 90, 25, 73, 38)


def decode_together(model, inputs: list[torch.Tensor], size: int, sample: bool, **options) -> dict[int, torch.Tensor]:
    pairs = ((x, [torch.Generator().manual_seed(100 + i)] if sample else None) for i, x in enumerate(inputs))
    return {i: ids for i, ids, _ in generation.generate_each(model, pairs, size, max_length=MAX_LENGTH, **options)}


@pytest.mark.parametrize("options", TOGETHER, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "greedy")
@pytest.mark.parametrize("rows_exact", ["probed", "never"])
def test_inputs_decoded_together_get_the_tokens_they_get_alone(tmp_path, monkeypatch, options, rows_exact):
    """Inputs of different lengths, decoded up to `size` at a time with finished ones leaving and waiting ones
    joining, each get exactly `generate`'s tokens for that input alone; so does sampling with one generator per
    input (the global generator is reseeded between runs to show it plays no part). "never" runs every linear
    layer input by input, "probed" over all inputs' rows where the kernel was seen to keep each input's bits."""
    if rows_exact == "never":
        monkeypatch.setattr(Linear, "_rows_exact", lambda *args: False)
        monkeypatch.setattr(linear, "_RUNS", {})
    pair = make_pair(tmp_path, seed=2, attention_type="block_sparse", eos_bias=2.0)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(3, 100, (1, n), generator=g) for n in TOGETHER_LENGTHS]
    sample = bool(options.get("do_sample"))
    generators = (lambda i: [torch.Generator().manual_seed(100 + i)]) if sample else (lambda i: None)
    alone = [
        pair.ours.generate(x, max_length=MAX_LENGTH, generators=generators(i), **options) for i, x in enumerate(inputs)
    ]

    batches: list[int] = []
    ragged_init = generation.RaggedCache.__init__

    def spy(self, caches, group):
        batches.append(len(caches))
        ragged_init(self, caches, group)

    monkeypatch.setattr(generation.RaggedCache, "__init__", spy)
    for size in (1, 3, 8):
        torch.manual_seed(size)
        batches.clear()
        together = decode_together(pair.ours, inputs, size, sample, **options)
        assert sorted(together) == list(range(len(inputs)))
        for i, ids in together.items():
            assert torch.equal(ids, alone[i]), (size, i)
        assert max(batches) == min(size, len(inputs))  # the inputs really shared steps
    if "min_new_tokens" not in options:  # inputs ended at different steps: some left the batch early
        assert len({a.shape[1] for a in alone}) > 1 or sample


def test_inputs_made_of_earlier_results_join_when_those_are_done(tmp_path):
    """A feed may say "nothing ready" (None) while the inputs its next ones are made of are in flight (summarize's
    summaries of summaries): decoding goes on, the later inputs join when made, and every input still gets its
    tokens alone; None with nothing in flight is a clear error, not a hang."""
    pair = make_pair(tmp_path, seed=2, attention_type="original_full", eos_bias=2.0)
    g = torch.Generator().manual_seed(3)
    first = [torch.randint(3, 100, (1, n), generator=g) for n in (40, 25, 33)]
    done: dict[int, torch.Tensor] = {}
    waited = 0

    def feed():
        nonlocal waited
        yield from ((x, None) for x in first)
        while len(done) < len(first):  # the next input is the first three's outputs, joined
            waited += 1
            yield None
        yield torch.cat([done[i][:, 1:] for i in range(len(first))], dim=1), None

    for index, ids, _ in generation.generate_each(pair.ours, feed(), 2, max_length=MAX_LENGTH, num_beams=2):
        done[index] = ids
    assert sorted(done) == [0, 1, 2, 3] and waited > 0
    joined = torch.cat([done[i][:, 1:] for i in range(3)], dim=1)
    for i, x in enumerate([*first, joined]):
        assert torch.equal(done[i], pair.ours.generate(x, max_length=MAX_LENGTH, num_beams=2)), i
    with pytest.raises(ValueError, match="none are"):
        list(generation.generate_each(pair.ours, iter([None]), 2, max_length=MAX_LENGTH))


def test_each_input_decoded_together_is_given_its_own_share_of_the_time(tmp_path):
    """An input's seconds hold its own encoding and an equal share of each step it rode in: inputs finishing in
    the same step each show at least their encoding (a time since the input finished before gave the second of
    them nothing), and the shares never add up to more than the call took."""
    pair = make_pair(tmp_path, seed=2, attention_type="original_full", eos_bias=0.0)
    inputs = [torch.randint(3, 100, (1, n), generator=torch.Generator().manual_seed(n)) for n in (40, 25, 33)]
    encoder = pair.ours.model.encoder
    encoding: list[float] = []
    original = encoder.forward

    def timed(*args, **kwargs):
        started = time.perf_counter()
        out = original(*args, **kwargs)
        encoding.append(time.perf_counter() - started)
        return out

    encoder.forward = timed
    started = time.perf_counter()
    done = list(generation.generate_each(pair.ours, ((x, None) for x in inputs), 3, max_length=8, min_length=8))
    took = time.perf_counter() - started
    assert [index for index, _, _ in done] == [0, 1, 2]  # all three end in the same step, the last one
    for (index, _, seconds), own in zip(done, encoding, strict=True):
        assert seconds > own, index
    assert sum(seconds for _, _, seconds in done) <= took


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_linear_rows_are_each_inputs_rows_alone(dtype):
    """Under rows_per_input, a layer gives every input's rows the bits that input gets alone, on data other than
    the probe's: the kernel's code path depends on the shapes only (bfloat16's kernels too)."""
    torch.manual_seed(0)
    layer = Linear(48, 80, activation="gelu").eval().to(dtype)
    for group, inputs in ((5, 8), (1, 4), (3, 2)):
        x = torch.randn(group * inputs, 1, 48).to(dtype)
        with torch.no_grad(), linear.rows_per_input(group):
            together = layer(x)
        with torch.no_grad():
            alone = torch.cat([layer(part.clone()) for part in x.split(group)])
        assert torch.equal(together, alone), (group, inputs)


@pytest.mark.parametrize(
    ("exact", "inputs", "runs"),
    [
        ("up to 3", 8, [3, 3, 2]),
        ("up to 3", 7, [3, 3, 1]),
        ("up to 3", 4, [3, 1]),
        ("up to 3", 2, [2]),
        ("3 or 4", 8, [4, 4]),
        ("3 or 4", 7, [4, 3]),
        ("3 or 4", 6, [3, 3]),
        ("3 or 4", 2, [1, 1]),
    ],
)
def test_batched_linear_rows_run_as_many_inputs_at_once_as_keep_their_bits(monkeypatch, exact, inputs, runs):
    """Where a kernel keeps each input's bits for some counts of inputs' rows at once (here by decree: a BLAS
    library changes its code path above some number of rows), the inputs run in runs of the most it can, the
    weight streamed once per run rather than once per input, and every run's size is one seen to keep the bits
    (a run of 4 leaving 2 is not taken where 2 is not exact)."""
    counts = {"up to 3": (2, 3), "3 or 4": (3, 4)}[exact]
    monkeypatch.setenv("BIGBIRD_KERNELS", "mkl")  # no timing calls among the counted ones
    monkeypatch.setattr(Linear, "_rows_exact", lambda self, kernel, dtype, group, n: n in counts)
    monkeypatch.setattr(linear, "_RUNS", {})
    layer = Linear(48, 80).eval()
    calls: list[int] = []
    run = Linear._run
    monkeypatch.setattr(Linear, "_run", lambda self, kernel, x: calls.append(len(x)) or run(self, kernel, x))
    with torch.no_grad(), linear.rows_per_input(5):
        layer(torch.randn(5 * inputs, 1, 48))
    assert [rows // 5 for rows in calls] == runs


def test_generation_hands_the_heap_back_after_each_encoder_and_first_step(tmp_path, monkeypatch):
    """Twice per input (its encoder's scratch, then its first step's) and never layer by layer in between:
    trimmed per layer, every layer's scratch was faulted in afresh. generate_each and generate alike."""
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "onednn")  # pack the kept keys/values where the build can
    pair = make_pair(tmp_path, seed=3, attention_type="original_full", eos_bias=0.0)
    trims: list[int] = []

    class Libc:  # every hand-back, from wherever it is asked, goes through glibc's malloc_trim
        def malloc_trim(self, pad: int) -> None:
            trims.append(pad)

    monkeypatch.setattr(bigbird.models.heap, "_libc", Libc)
    inputs = [torch.randint(5, 90, (1, n), generator=torch.Generator().manual_seed(n)) for n in (12, 20, 9)]
    done = decode_together(pair.ours, inputs, 2, sample=False, num_beams=2)
    assert sorted(done) == [0, 1, 2] and len(trims) == 2 * len(inputs)
    trims.clear()
    pair.ours.generate(inputs[0], num_beams=2, max_length=MAX_LENGTH)
    assert len(trims) == 2


def test_generate_each_refuses_batched_rows(tmp_path):
    pair = make_pair(tmp_path, seed=2, attention_type="original_full", eos_bias=0.0)
    with pytest.raises(ValueError, match="one row"):
        list(generation.generate_each(pair.ours, [(torch.ones(2, 8, dtype=torch.long), None)], 2, max_length=8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_reduced_precision_decoder_caches_and_attends_in_float32_on_the_cpu(tmp_path, dtype, monkeypatch):
    """torch's CPU attention is several times slower in bfloat16 and float16 at a decoding step's shapes, so the
    self-attention cache holds such a model's keys/values in float32 (widening is exact) and its steps attend in
    float32: each step's logits stay those of the uncached forward pass in the model's type, within its rounding.
    One matmul kernel for every shape, so that the two sides differ by the cache alone (see the causal LM's test)."""
    monkeypatch.setenv("BIGBIRD_KERNELS", "mkl")
    pair = make_pair(tmp_path, seed=3, attention_type="original_full", eos_bias=0.0)
    model = pair.ours.to(dtype)
    caches: list[DecoderCache] = []
    init = DecoderCache.__init__
    monkeypatch.setattr(DecoderCache, "__init__", lambda self, *a, **k: caches.append(self) or init(self, *a, **k))
    source = torch.randint(3, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.generate(source, num_beams=2, max_new_tokens=6, min_new_tokens=6)
        assert caches and all(k.dtype == torch.float32 for k in caches[0].keys)
        cache, target, steps = DecoderCache(len(model.model.decoder.layers)), out[:2], []
        cached = {"input_ids": source, "past_key_values": cache, "use_cache": True}
        for t in range(target.shape[1]):
            steps.append(model(decoder_input_ids=target[:, t : t + 1], **cached).logits[:, -1])
        whole = model(input_ids=source, decoder_input_ids=target).logits
    assert all(k.dtype == torch.float32 for k in cache.keys)
    assert torch.allclose(torch.stack(steps, 1).float(), whole.float(), atol=0.05, rtol=0.02)


def test_a_bfloat16_model_decoded_together_gets_the_tokens_it_gets_alone(tmp_path):
    """The float32 cache of a bfloat16 model keeps decoding inputs together exact."""
    pair = make_pair(tmp_path, seed=2, attention_type="block_sparse", eos_bias=2.0)
    model = pair.ours.to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(3, 100, (1, n), generator=g) for n in TOGETHER_LENGTHS]
    options = {"num_beams": 3, "length_penalty": 0.8}
    alone = [model.generate(x, max_length=MAX_LENGTH, **options) for x in inputs]
    together = decode_together(model, inputs, 3, False, **options)
    assert all(torch.equal(together[i], alone[i]) for i in range(len(inputs)))
