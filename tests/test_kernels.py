"""bigbird.models.kernels: CPU features, the private-op checks and their fallbacks, the measured kernel choice and
its cache. No timings are asserted: the decision is tested on given timings, the real run only for validity."""

from __future__ import annotations

import copy
import functools
import io
import json

import pytest
import torch
import torch.nn.functional as F

import bigbird
from bigbird.models import cpu, kernels, private_ops
from bigbird.models.attention import block_sparse_attention, fused_kernel_applies, hf_plan
from bigbird.models.cross_attention import CrossKeysValues
from bigbird.models.linear import Linear
from bigbird.models.presets import PEGASUS_TINY
from bigbird.training.loop import unpacked


@pytest.mark.parametrize(
    ("flags", "env", "levels"),
    [
        ({"avx512f", "avx512_vnni"}, "", 127),
        ({"avx2", "avx_vnni"}, "", 127),
        ({"amx_tile", "amx_int8"}, "", 127),
        ({"avx512f", "avx512bw"}, "", 63),  # Skylake-SP: int16 pair sums would saturate
        ({"avx512f", "avx512_vnni"}, "1", 63),
        ({"avx512f"}, "0", 127),
    ],
)
def test_int8_weight_levels_follow_vnni_and_the_switch(flags, env, levels, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setenv("BIGBIRD_INT8_SAFE", env)
    assert cpu.int8_weight_levels() == levels


def test_cpu_flags_without_proc_cpuinfo_fall_back_to_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "missing")
    flags = cpu.cpu_flags.__wrapped__()
    capability = torch.backends.cpu.get_cpu_capability()
    assert ("avx512f" in flags) == (capability == "AVX512")
    assert not {"avx512_vnni", "avx_vnni"} & flags  # unknown, so int8 takes the safe path


ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
ZEN4 += "stepping\t: 1\n"
ZEN5 = ZEN4.replace("25", "26").replace("17", "2")


@pytest.mark.parametrize(
    ("cpuinfo", "generation"),
    [
        (ZEN4 + "\n" + ZEN5.replace("processor\t: 0", "processor\t: 1"), "25/17/1"),  # the first processor's
        (ZEN5, "26/2/1"),
        ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU part\t: 0xd0c\n", ""),  # arm64 says none
    ],
)
def test_cpu_generation_reads_family_model_stepping(cpuinfo, generation, tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "cpuinfo")
    assert cpu.cpu_generation.__wrapped__() == generation


def test_two_cpu_generations_of_one_model_name_keep_their_own_choices(fresh_choices, monkeypatch):
    """A hypervisor may name a Zen 4 and a Zen 5 both "AMD EPYC"; a cache folder they share (a cluster's home
    folder) must not hand one's measured choices to the other."""
    monkeypatch.setattr(cpu, "cpu_model", lambda: "AMD EPYC")
    paths = set()
    for generation in ("25/17/1", "26/2/1"):
        monkeypatch.setattr(cpu, "cpu_generation", lambda generation=generation: generation)
        paths.add(kernels.cache_path())
        monkeypatch.setattr(kernels, "_chosen", {})
        monkeypatch.setattr(
            kernels,
            "measure",
            lambda names, run, default, g=generation: {"mkl": 1.0, "onednn": 0.5 if g == "25/17/1" else 2.0},
        )
        assert kernels.choose("k", ["mkl", "onednn"], run=None) == ("onednn" if generation == "25/17/1" else "mkl")
        assert json.loads(kernels.cache_path().read_text())["cpu"] == f"AMD EPYC ({generation})"
    assert len(paths) == 2
    monkeypatch.setattr(cpu, "cpu_generation", lambda: "")  # where /proc/cpuinfo does not say: the name alone
    assert cpu.cpu_identity() == "AMD EPYC" and kernels.cache_path() not in paths


def test_isa_names_what_bench_reports(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "amx_tile", "sse4_2"}))
    assert cpu.isa() == ["avx2", "avx512f", "amx"]


@pytest.mark.parametrize("name", ["linear", "linear-packed", "qlinear", "qlinear-fbgemm", "flash", "conv-packed"])
def test_private_ops_pass_their_check_on_the_tested_torch(name):
    """pyproject names the torch versions these checks were run on; on those, every fast path is in use."""
    assert private_ops.private_op(name) is not None


def test_the_bfloat16_convolution_passes_its_check_wherever_onednn_has_bfloat16():
    """An int8 model's cross-attention runs it on CPUs with native bfloat16; oneDNN says where it has the type."""
    assert (private_ops.private_op("conv-packed-bf16") is not None) == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.parametrize("name", ["linear", "flash", "conv-packed"])
@pytest.mark.parametrize("fault", ["missing", "signature", "wrong numbers"])
def test_a_broken_private_op_falls_back_to_the_public_path(name, fault, monkeypatch, fresh_choices):
    def check():
        if fault == "missing":
            return torch.ops.aten._no_such_op_for_this_test, True
        if fault == "signature":
            raise TypeError("unexpected keyword argument")
        return (lambda *args, **kwargs: None), False

    monkeypatch.setitem(private_ops._CHECKS, name, check)
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "onednn")  # packs wherever the op works
    private_ops._verified.cache_clear()
    try:
        assert private_ops.private_op(name) is None
        layer = Linear(16, 8, activation="gelu")
        x = torch.randn(3, 16)
        expected = F.gelu(F.linear(x, layer.weight, layer.bias)).detach()  # before the layer may pack its weight
        q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
        with torch.inference_mode():
            assert torch.allclose(layer(x), expected, atol=1e-6)
            assert fused_kernel_applies(q, k, v) == (name != "flash")
            out, _ = block_sparse_attention(q, k, v, torch.ones(1, 32), 4, hf_plan(8, 2, 1))
            kept = CrossKeysValues(k, v, reused=True)
            context, _ = kept.attend(q[:, :, :1], None)
        assert torch.isfinite(out).all()
        assert torch.allclose(context, F.scaled_dot_product_attention(q[:, :, :1], k, v), atol=1e-5)
        assert kept.packed == (name != "conv-packed" and private_ops.private_op("conv-packed") is not None)
    finally:
        private_ops._verified.cache_clear()


def test_private_ops_switched_off(monkeypatch):
    monkeypatch.setenv("BIGBIRD_PRIVATE_OPS", "0")
    assert all(private_ops.private_op(name) is None for name in private_ops._CHECKS)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ({"mkl": 1.0, "onednn": 0.97}, "mkl"),  # within the noise: torch's default
        ({"mkl": 1.0, "onednn": 0.5}, "onednn"),
        ({"mkl": 0.5, "onednn": 1.0}, "mkl"),
        ({"mkl": 1.0, "onednn": 1.3, "other": 0.5}, "other"),
    ],
)
def test_decision_is_never_slower_than_the_default(seconds, expected):
    assert kernels.decide(seconds) == expected


@pytest.mark.parametrize(
    ("durations", "rounds"),
    [
        ({"mkl": 1.0, "onednn": 0.5}, kernels.ROUNDS),  # a clear winner: decided on the first rounds
        ({"mkl": 1.0, "onednn": 0.93}, kernels.ROUNDS + kernels.MORE_ROUNDS),  # close: measured longer
        ({"mkl": 1.0, "onednn": 1.06}, kernels.ROUNDS + kernels.MORE_ROUNDS),
    ],
)
def test_a_close_call_is_measured_longer(durations, rounds):
    """The timed calls of each kernel (a fake clock gives each call its duration): close calls get more rounds."""
    calls: list[str] = []
    now = [0.0]

    def run(name: str) -> None:
        calls.append(name)
        now[0] += durations[name]

    seconds = kernels.measure(list(durations), run, "mkl", clock=lambda: now[0])
    assert seconds == pytest.approx(durations)
    assert len(calls) == len(durations) * (1 + rounds)  # one warm-up call each, then the rounds


def test_choice_is_measured_once_then_read_from_the_cache(fresh_choices, monkeypatch):
    timed: list[list[str]] = []

    def fake_measure(names, run, default):
        timed.append(names)
        return {name: {"mkl": 2.0, "onednn": 1.0, "onednn-packed": 1.5}[name] for name in names}

    monkeypatch.setattr(kernels, "measure", fake_measure)
    names = list(kernels.CANDIDATES)
    assert kernels.choose("k", names, run=None) == "onednn"
    assert kernels.choose("k", names, run=None) == "onednn"
    assert len(timed) == 1
    data = json.loads(kernels.cache_path().read_text())
    assert data["torch"] == torch.__version__ and data["cpu"] == cpu.cpu_identity()
    assert data["choices"]["k"] == {
        "choice": "onednn",
        "ms": {"mkl": 2000.0, "onednn": 1000.0, "onednn-packed": 1500.0},
    }
    assert timed == [names]
    monkeypatch.setattr(kernels, "_chosen", {})  # a new process: the file answers
    assert kernels.choose("k", names, run=None) == "onednn" and len(timed) == 1
    assert kernels.choose("k", ["mkl"], run=None) == "mkl" and len(timed) == 1  # nothing to time


def _cpu_readings(monkeypatch, others: float) -> None:
    """Each timing reads the machine's CPU times twice: one second apart on 2 CPUs, in which this process used 0.5 s
    and other processes `others` of the 2 s."""
    readings = iter(
        [kernels.CpuTimes(busy=10.0, total=100.0, own=1.0), kernels.CpuTimes(10.5 + 2 * others, 102.0, 1.5)] * 2
    )
    monkeypatch.setattr(kernels, "cpu_times", lambda: next(readings))


@pytest.mark.parametrize(("others", "cached"), [(0.9, False), (0.3, False), (0.2, True), (0.0, True)])
def test_a_choice_timed_under_load_runs_but_is_not_cached(others, cached, fresh_choices, monkeypatch, caplog):
    """A timing beside other busy processes measures them as much as the kernels: the next process times again."""
    _cpu_readings(monkeypatch, others)
    timed: list[list[str]] = []
    monkeypatch.setattr(
        kernels, "measure", lambda names, run, default: timed.append(names) or {"mkl": 2.0, "onednn": 1.0}
    )
    with caplog.at_level("DEBUG", logger=kernels.__name__):
        assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn"
    assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn" and len(timed) == 1  # this process keeps it
    assert ("k" in kernels._load()) == cached
    assert kernels.summary()["contended"] == ({} if cached else {"k": others})
    assert ("not cached" in caplog.text) != cached
    monkeypatch.setattr(kernels, "_chosen", {})  # a new process
    assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn"
    assert len(timed) == (1 if cached else 2)


@pytest.mark.parametrize("kind", [kernels.TRAINING, kernels.TRAINING_ATTENTION])
def test_training_choices_are_cached_even_when_timed_under_load(kind, fresh_choices, monkeypatch):
    """They change a training step's rounding: a run resumed in a new process must make the same choice."""
    _cpu_readings(monkeypatch, 0.9)
    names = list(kind.candidates)
    monkeypatch.setattr(kernels, "measure", lambda names, run, default: {name: 1.0 for name in names})
    assert kernels.choose("k", names, run=None, kind=kind) == kind.default
    assert "k" in kernels._load() and kernels.summary()["contended"] == {}


def test_a_timing_too_short_to_tell_the_load_is_taken_again_until_it_can(fresh_choices, monkeypatch):
    """A decoder step's shapes time in milliseconds, under /proc/stat's ticks: more rounds until they span
    LOAD_WINDOW, each kernel keeping its fastest; the load is then told over the whole span."""
    span = kernels.LOAD_WINDOW
    readings = iter(
        [
            kernels.CpuTimes(busy=10.0, total=100.0, own=1.0),
            kernels.CpuTimes(busy=10.0, total=100.0 + span / 4, own=1.0),  # too short
            kernels.CpuTimes(busy=10.0 + span, total=100.0 + span, own=1.0 + span / 4),  # others 3/4 of it
        ]
    )
    monkeypatch.setattr(kernels, "cpu_times", lambda: next(readings))
    rounds = iter([{"mkl": 2.0, "onednn": 1.0}, {"mkl": 1.5, "onednn": 1.2}])
    monkeypatch.setattr(kernels, "measure", lambda names, run, default: next(rounds))
    assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn"
    assert kernels._measured["k"] == {"mkl": 1.5, "onednn": 1.0}
    assert kernels.summary()["contended"] == {"k": 0.75} and "k" not in kernels._load()


def test_without_cpu_readings_a_timing_is_taken_once(fresh_choices, monkeypatch):
    monkeypatch.setattr(kernels, "cpu_times", lambda: None)  # macOS, Windows
    timed: list[list[str]] = []
    monkeypatch.setattr(
        kernels, "measure", lambda names, run, default: timed.append(names) or {"mkl": 2.0, "onednn": 1.0}
    )
    assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn" and len(timed) == 1
    assert "k" in kernels._load()


@pytest.mark.parametrize(
    ("after", "share"),
    [
        (kernels.CpuTimes(busy=10.5, total=102.0, own=1.5), 0.0),  # only this process was busy
        (kernels.CpuTimes(busy=11.5, total=102.0, own=1.5), 0.5),  # one other busy CPU of two
        (kernels.CpuTimes(busy=12.0, total=102.0, own=1.5), 0.75),
        (kernels.CpuTimes(busy=10.2, total=102.0, own=1.5), 0.0),  # the ticks undercounted this process
        (kernels.CpuTimes(busy=10.1, total=100.1, own=1.0), 0.0),  # too short a span to tell
        (None, 0.0),  # no /proc/stat
    ],
)
def test_others_cpu_share_is_the_machines_busy_time_less_this_process(after, share):
    before = kernels.CpuTimes(busy=10.0, total=100.0, own=1.0)
    assert kernels.others_cpu_share(before, after) == pytest.approx(share)
    assert kernels.others_cpu_share(None, before) == 0.0


def test_cpu_times_reads_proc_stat_busy_and_idle(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice: guest time is already counted in user
    stat.write_text("cpu  1000 20 300 5000 70 4 50 6 900 9\ncpu0 500 10 150 2500 35 2 25 3 450 4\nintr 1 2\n")
    monkeypatch.setattr(kernels.os, "sysconf", lambda name: 100)
    monkeypatch.setattr(kernels.time, "process_time", lambda: 7.5)
    assert kernels.cpu_times(stat) == kernels.CpuTimes(busy=13.8, total=64.5, own=7.5)
    assert kernels.cpu_times(tmp_path / "missing") is None  # macOS, Windows: counted as quiet
    stat.write_text("")
    assert kernels.cpu_times(stat) is None


def test_a_cached_choice_is_timed_again_against_a_kernel_it_never_met(fresh_choices, monkeypatch):
    """A cache written by a version with fewer candidates (or on a torch build lacking one) does not hide one."""
    kernels._save("k", "onednn", {"mkl": 2.0, "onednn": 1.0})
    monkeypatch.setattr(kernels, "measure", lambda names, run, default: dict(zip(names, (3.0, 2.0, 1.0), strict=True)))
    assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn"  # timed against both: the file answers
    monkeypatch.setattr(kernels, "_chosen", {})
    assert kernels.choose("k", list(kernels.CANDIDATES), run=None) == "onednn-packed"


def test_int8_choice_defaults_to_fbgemm_and_is_kept_apart_from_float32(fresh_choices, monkeypatch):
    """torch's own dynamic int8 linear (fbgemm) is the int8 default; its choices carry their own keys."""
    assert kernels.decide({"fbgemm": 1.0, "onednn": 0.97}, kernels.INT8.default) == "fbgemm"
    assert kernels.decide({"fbgemm": 1.0, "onednn": 0.5}, kernels.INT8.default) == "onednn"
    timings = {"fbgemm": 1.0, "onednn": 2.0, "mkl": 2.0}
    monkeypatch.setattr(kernels, "measure", lambda names, run, default: {name: timings[name] for name in names})
    int8_key = kernels.shape_key(8, 4, "none", 5, kernels.INT8)
    float_key = kernels.shape_key(8, 4, "none", 5)
    assert int8_key != float_key and int8_key.startswith("int8 ")
    assert kernels.choose(int8_key, ["fbgemm", "onednn"], None, kernels.INT8) == "fbgemm"
    assert kernels.choose(float_key, ["mkl", "onednn"], None) == "mkl"
    chosen = kernels.summary()
    assert chosen["int8"] == {float_key: "fbgemm"} and chosen["float32"] == {float_key: "mkl"}
    monkeypatch.setenv("BIGBIRD_INT8_KERNELS", "onednn")
    assert kernels.choose(int8_key, ["fbgemm", "onednn"], None, kernels.INT8) == "onednn"
    assert kernels.choose(float_key, ["mkl", "onednn"], None) == "mkl"  # the float32 override is another variable


@pytest.mark.parametrize(
    ("forced", "names", "expected"),
    [
        ("onednn", kernels.CANDIDATES, "onednn"),
        ("mkl", kernels.CANDIDATES, "mkl"),
        ("onednn-packed", ("mkl", "onednn"), "onednn"),  # a tied weight, which may not pack, still runs oneDNN
        ("onednn-packed", ("mkl",), "mkl"),
    ],
)
def test_override_skips_the_measurement(forced, names, expected, fresh_choices, monkeypatch):
    monkeypatch.setenv("BIGBIRD_KERNELS", forced)
    monkeypatch.setattr(kernels, "measure", None)  # calling it would fail
    assert kernels.choose("k", list(names), run=None) == expected
    assert not kernels.cache_path().exists()
    if len(names) > 1:  # one kernel that can run is no choice
        assert kernels.summary()["float32"] == {"k": expected}  # bench reports what ran, not what was asked for


@pytest.mark.parametrize("value", ["bogus", "onednn_packed", ""])
def test_an_override_that_names_no_kernel_is_warned_about_and_measures(value, fresh_choices, monkeypatch, caplog):
    monkeypatch.setenv("BIGBIRD_KERNELS", value)
    monkeypatch.setattr(kernels, "measure", lambda names, run, default: {"mkl": 2.0, "onednn": 1.0})
    kernels._warn_once.cache_clear()
    with caplog.at_level("WARNING", logger=kernels.__name__):
        assert kernels.choose("k", ["mkl", "onednn"], run=None) == "onednn"
    assert ("names no float32 kernel" in caplog.text) == bool(value)  # empty is unset
    assert kernels.summary()["override"] == "auto"


def test_unwritable_cache_still_runs(tmp_path, fresh_choices, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("BIGBIRD_CACHE_DIR", str(tmp_path / "file" / "below"))
    layer = Linear(8, 8)
    expected = F.linear(torch.ones(2, 8), layer.weight, layer.bias).detach()  # before the layer may pack
    with torch.inference_mode():
        assert torch.allclose(layer(torch.ones(2, 8)), expected)


def test_real_measurement_makes_a_valid_choice_and_caches_it(fresh_choices):
    layer = Linear(64, 256, activation="gelu")
    plain = layer.weight.detach().clone()  # the layer may choose to keep only its packed weight
    x = torch.randn(300, 64)
    with torch.inference_mode():
        y = layer(x)
    assert torch.allclose(y, F.gelu(F.linear(x, plain, layer.bias)), atol=1e-5)
    key = kernels.shape_key(64, 256, "gelu", 300)
    stored = json.loads(kernels.cache_path().read_text())["choices"][key]
    assert stored["choice"] in kernels.FLOAT32.candidates and set(stored["ms"]) == set(kernels.FLOAT32.candidates)
    assert stored["choice"] == kernels.summary()["float32"][key]
    assert kernels.summary()["measured_ms"][key] == stored["ms"]
    assert layer._trial is None and layer.packed == (stored["choice"] == "onednn-packed")


# Packing needs oneDNN's packed linear, checked once like the other private ops; without it nothing packs.
needs_packing = pytest.mark.skipif(
    private_ops.private_op("linear-packed") is None, reason="this torch build has no working packed oneDNN linear"
)


def _packed_layer(monkeypatch, **kwargs) -> tuple[Linear, torch.Tensor]:
    """A layer forced onto packed weights by one inference call, and its plain weight from before."""
    monkeypatch.setenv("BIGBIRD_KERNELS", "onednn-packed")
    layer = Linear(16, 8, activation="gelu", **kwargs)
    plain = layer.weight.detach().clone()
    with torch.inference_mode():
        layer(torch.randn(4, 16))
    assert layer.packed and layer.weight.is_mkldnn and layer._trial is None
    return layer, plain


@needs_packing
def test_packed_layer_holds_one_copy_and_gives_the_plain_numbers(fresh_choices, monkeypatch):
    layer, plain = _packed_layer(monkeypatch)
    monkeypatch.setenv("BIGBIRD_KERNELS", "mkl")  # a packed layer has only the packed weight: it runs on it
    for rows in (1, 5, 300):
        x = torch.randn(rows, 16)
        with torch.no_grad():
            assert torch.allclose(layer(x), F.gelu(F.linear(x, plain, layer.bias)), atol=1e-5)
        assert layer.packed
    assert "packed" in repr(layer)


@needs_packing
@pytest.mark.parametrize(
    "need",
    ["state_dict", "copy", "train", "tracked_forward", "to", "load_state_dict", "quantize_int8", "pickle"],
)
def test_whatever_needs_the_plain_weight_gets_it_back_exactly(need, fresh_choices, monkeypatch):
    """Packing is invisible outside inference: each of these sees the plain weight, bit for bit."""
    layer, plain = _packed_layer(monkeypatch)
    x = torch.randn(3, 16)
    if need == "state_dict":
        assert torch.equal(layer.state_dict()["weight"], plain) and layer.packed  # a plain copy; the layer stays packed
        return
    if need == "copy":
        assert torch.equal(copy.deepcopy(layer).weight, plain) and layer.packed
        return
    if need == "pickle":
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False).weight, plain)
        return
    if need == "train":
        layer.train()
        assert layer.weight.requires_grad  # an optimizer made now trains it
    elif need == "tracked_forward":
        y = layer(x.requires_grad_())
        y.sum().backward()
        assert x.grad is not None
    elif need == "to":
        layer.to(torch.float64)
        plain = plain.double()
    elif need == "load_state_dict":
        plain = torch.randn_like(plain)
        layer.load_state_dict({"weight": plain, "bias": layer.bias.detach()})
    elif need == "quantize_int8":
        layer.quantize_int8()
    assert not layer.packed and torch.equal(layer.weight.detach(), plain)


def _tied_model_packing_wherever_it_can(monkeypatch) -> bigbird.BigBirdPegasusForConditionalGeneration:
    monkeypatch.setenv("BIGBIRD_KERNELS", "auto")
    model = bigbird.BigBirdPegasusForConditionalGeneration(bigbird.BigBirdPegasusConfig(**PEGASUS_TINY))
    assert model.lm_head.shares_weight and not model.model.decoder.layers[0].ffn_in.shares_weight
    # Packing wins wherever it is a candidate.
    monkeypatch.setattr(kernels, "decide", lambda seconds, default: min(seconds, key=lambda n: n != "onednn-packed"))
    return model


@needs_packing
def test_a_tied_weight_stays_shared_and_packs_a_copy_beside_it(fresh_choices, monkeypatch):
    """The LM head's weight is the embeddings' too: packing keeps it where it is and adds one packed copy, which the
    head then runs on; a change to the shared weight in place makes the copy stale, and the head follows it."""
    model = _tied_model_packing_wherever_it_can(monkeypatch)
    ids = torch.randint(5, 90, (1, 8))
    with torch.inference_mode():
        model.generate(ids, num_beams=2, max_new_tokens=3)
    head, shared = model.lm_head, model.model.shared.weight
    assert model.model.decoder.layers[0].ffn_in.packed
    assert not head.packed and head.weight is shared and not shared.is_mkldnn
    assert head._beside is not None and "packed copy beside" in repr(head)
    states = torch.randn(5, shared.shape[1])
    with torch.no_grad():
        assert torch.allclose(head(states), F.linear(states, shared), atol=1e-5)
        shared.mul_(2)
        assert torch.allclose(head(states), F.linear(states, shared), atol=1e-5)
    assert head._beside is not None and head._beside[1].matches(shared)  # packed again, from the new weight
    model.train()
    assert head._beside is None and head.weight is shared


def _replace_the_data(model: torch.nn.Module) -> None:
    shared = model.model.shared.weight
    shared.data = shared.data * 2  # new memory, the version unmoved


def _tie_a_new_parameter(model: torch.nn.Module) -> None:
    weight = torch.nn.Parameter(model.model.shared.weight.detach() * 2)
    model.model.shared.weight = model.lm_head.weight = weight  # a fresh tensor, at the same version (0)


def _convert_the_model_but_not_its_head(model: torch.nn.Module) -> None:
    model.model.to(torch.bfloat16)  # the shared Parameter changes type in place; the head's module never hears


@needs_packing
@pytest.mark.parametrize("change", [_replace_the_data, _tie_a_new_parameter, _convert_the_model_but_not_its_head])
def test_a_tied_weight_replaced_without_an_in_place_write_lets_the_packed_copy_go(fresh_choices, monkeypatch, change):
    """Changes that leave the weight's version where it was: the head must run on the weight it now has, not on the
    copy of the one it had."""
    model = _tied_model_packing_wherever_it_can(monkeypatch)
    with torch.inference_mode():
        model.generate(torch.randint(5, 90, (1, 8)), num_beams=2, max_new_tokens=3)
    head = model.lm_head
    assert head._beside is not None
    change(model)
    weight = head.weight
    states = torch.randn(5, weight.shape[1]).to(weight.dtype)
    with torch.no_grad():
        out = head(states)
    assert out.dtype == weight.dtype
    torch.testing.assert_close(out, F.linear(states, weight))
    assert head._beside is None or head._beside[1].matches(weight)


@needs_packing
def test_inference_inside_training_keeps_every_weight_the_optimizers_and_adds_no_copy(fresh_choices, monkeypatch):
    """A training loop's evaluation runs under `unpacked`: no layer swaps its Parameter for a packed one (the
    optimizer would step a tensor the model no longer uses) or packs a copy of a tied one."""
    model = _tied_model_packing_wherever_it_can(monkeypatch).eval()
    before = dict(model.named_parameters())
    with unpacked(model), torch.no_grad():
        model.generate(torch.randint(5, 90, (1, 8)), num_beams=2, max_new_tokens=3)
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[name] is p for name, p in before.items())
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    assert all(not layer.packed and layer._beside is None and layer.may_pack for layer in layers)


def test_checking_the_private_ops_leaves_the_global_generator_alone(monkeypatch):
    """The checks run at a kernel's first use, inside a user's seeded run: a draw from the global generator there
    moved every later dropout mask and random block plan of the process (a resumed training run differed from
    an unbroken one)."""
    monkeypatch.setattr(private_ops, "_verified", functools.cache(private_ops._verified.__wrapped__))
    before = torch.get_rng_state()
    for name in private_ops.NAMES:
        private_ops.private_op(name)
    assert torch.equal(torch.get_rng_state(), before)
