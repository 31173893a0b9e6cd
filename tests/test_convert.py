"""`bigbird convert`: round trips, sharding, dtype, config rewrites, refusals; through bigbird.tools.convert and CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import cli, one_sentence
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bigbird import BigBirdConfig, BigBirdForMaskedLM, CheckpointError
from bigbird.models.checkpoints import checkpoint_state_dict
from bigbird.tools.convert import ConvertError, ConvertOptions, convert, parse_size, verify
from bigbird.tools.tiny import BIGBIRD_HEADS, PEGASUS_HEADS, make_tiny_checkpoint
from bigbird_cli.app import app

TOKENIZER_FILES = {"spiece.model": b"not really a sentencepiece model", "tokenizer_config.json": b'{"x": 1}'}


def tiny_config() -> BigBirdConfig:
    config = BigBirdConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        block_size=16,
        num_random_blocks=2,
    )
    config.architectures = ["BigBirdForMaskedLM"]
    return config


@pytest.fixture(scope="module")
def pickled_checkpoint(tmp_path_factory) -> Path:
    """A tiny BigBirdForMaskedLM as transformers used to ship them: pytorch_model.bin under checkpoint names,
    the output layer stored as an alias of the word embeddings, plus tokenizer files."""
    directory = tmp_path_factory.mktemp("src")
    config = tiny_config()
    torch.manual_seed(0)
    model = BigBirdForMaskedLM(config)
    state = checkpoint_state_dict(model)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # shared storage
    torch.save(state, directory / "pytorch_model.bin")
    config.to_json_file(directory / "config.json")
    for name, data in TOKENIZER_FILES.items():
        (directory / name).write_bytes(data)
    return directory


def probe(directory: Path) -> torch.Tensor:
    ids = torch.randint(5, 300, (2, 200), generator=torch.Generator().manual_seed(1))
    model = BigBirdForMaskedLM.from_pretrained(directory, dtype=torch.float32)
    with torch.inference_mode():
        return model(ids).logits


def stored_names(directory: Path) -> dict[str, torch.dtype]:
    names = {}
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():
                names[key] = handle.get_tensor(key).dtype
    return names


def test_round_trip_bin_to_safetensors_keeps_names_and_outputs(pickled_checkpoint, tmp_path):
    dst = tmp_path / "out"
    report = convert(pickled_checkpoint, dst, ConvertOptions(verify=True))

    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", *sorted(TOKENIZER_FILES)]
    for name, data in TOKENIZER_FILES.items():
        assert (dst / name).read_bytes() == data
    source_names = set(torch.load(pickled_checkpoint / "pytorch_model.bin", weights_only=True))
    # Names kept as they are; only the alias that loaders re-tie themselves is left out.
    assert report["dropped_tied"] == ["cls.predictions.decoder.weight"]
    assert set(stored_names(dst)) == source_names - {"cls.predictions.decoder.weight"}
    assert torch.equal(probe(pickled_checkpoint), probe(dst))
    assert report["verify"]["max_abs_diff"] == 0.0
    assert report["dtype"] == "float32" and report["shards"] == 1
    assert report["parameters"] == sum(t.numel() for t in BigBirdForMaskedLM(tiny_config()).state_dict().values()) - (
        300 * 32
    )  # the tied output layer is counted once
    assert report["files"][str(dst / "model.safetensors")] == (dst / "model.safetensors").stat().st_size
    assert not list(tmp_path.glob(".out.*")), "the temporary directory was left behind"


def test_resharding_a_safetensors_checkpoint(pickled_checkpoint, tmp_path):
    convert(pickled_checkpoint, tmp_path / "sharded", ConvertOptions(max_shard_size="20KB"))
    report = convert(tmp_path / "sharded", tmp_path / "single")
    assert report["shards"] == 1 and (tmp_path / "single" / "model.safetensors").exists()
    assert torch.equal(probe(pickled_checkpoint), probe(tmp_path / "single"))


def test_sharded_pickle_source(pickled_checkpoint, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_bytes((pickled_checkpoint / "config.json").read_bytes())
    state = torch.load(pickled_checkpoint / "pytorch_model.bin", weights_only=True)
    names = list(state)
    weight_map = {}
    for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), start=1):
        shard = f"pytorch_model-0000{k}-of-00002.bin"
        torch.save({n: state[n].clone() for n in part}, src / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    convert(src, tmp_path / "out")
    assert torch.equal(probe(pickled_checkpoint), probe(tmp_path / "out"))


def test_refuses_a_directory_without_config(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ConvertError, match="has no config.json"):
        convert(tmp_path / "src", tmp_path / "out")


def test_transformers_loads_the_result(pickled_checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    dst = tmp_path / "out"
    convert(pickled_checkpoint, dst)
    theirs = transformers.BigBirdForMaskedLM.from_pretrained(dst).eval()
    ids = torch.randint(5, 300, (2, 200), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = theirs(ids).logits
    torch.testing.assert_close(logits, probe(dst), atol=1e-4, rtol=1e-4)


def test_sharded_output_has_an_index_and_loads(pickled_checkpoint, tmp_path):
    dst = tmp_path / "sharded"
    report = convert(pickled_checkpoint, dst, ConvertOptions(max_shard_size="20KB"))
    shards = sorted(dst.glob("model-*-of-*.safetensors"))
    assert report["shards"] == len(shards) > 1
    assert not (dst / "model.safetensors").exists()
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert set(index["weight_map"]) == set(stored_names(dst))
    assert index["metadata"]["total_size"] == report["weights_bytes"]
    # Every shard respects the limit unless it holds a single larger tensor.
    for path in shards:
        with safe_open(str(path), "pt") as handle:
            sizes = [handle.get_tensor(k).numel() * 4 for k in handle.keys()]
        assert sum(sizes) <= 20_000 or len(sizes) == 1
    assert torch.equal(probe(pickled_checkpoint), probe(dst))


def test_views_of_one_tensor_are_stored_as_copies(tmp_path):
    """Names that are not tied but share memory (here: two views of one fused matrix) each keep their values."""
    src = tmp_path / "src"
    src.mkdir()
    tiny_config().to_json_file(src / "config.json")
    fused = torch.arange(12.0).view(4, 3)
    state = {"a.weight": fused[:2], "b.weight": fused[2:], "c.weight": fused[:2]}
    torch.save(state, src / "pytorch_model.bin")
    report = convert(src, tmp_path / "out")
    assert report["dropped_tied"] == []
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as handle:
        for name, tensor in state.items():
            assert torch.equal(handle.get_tensor(name), tensor)


class Payload:
    """Unpickling this would create `marker`: a stand-in for code a malicious checkpoint runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    src = tmp_path / "evil"
    src.mkdir()
    tiny_config().to_json_file(src / "config.json")
    marker = tmp_path / "pwned"
    torch.save(
        {"bert.embeddings.word_embeddings.weight": torch.zeros(3), "x": Payload(marker)}, src / "pytorch_model.bin"
    )
    # The payload is live: a plain pickle load would have run it.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(src / "pytorch_model.bin", weights_only=True)
    assert not marker.exists()

    with pytest.raises(CheckpointError, match="refused to load .*pytorch_model.bin.*could run code"):
        convert(src, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_change(pickled_checkpoint, tmp_path, dtype):
    dst = tmp_path / dtype
    report = convert(pickled_checkpoint, dst, ConvertOptions(dtype=dtype, verify=True))
    assert report["dtype"] == dtype
    assert set(stored_names(dst).values()) == {getattr(torch, dtype)}
    config = json.loads((dst / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == dtype
    assert 0 < report["verify"]["max_abs_diff"] < 0.05
    assert report["weights_bytes"] == report["parameters"] * 2


def test_a_destination_is_refused_before_the_source_is_downloaded(tmp_path, monkeypatch):
    from bigbird.models import checkpoints

    def download(*args, **kwargs):
        raise AssertionError("the source was fetched before DST was checked")

    monkeypatch.setattr(checkpoints, "_download", download)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("from before")
    with pytest.raises(ConvertError, match="already exists; pass --force"):
        convert("google/bigbird-roberta-base", tmp_path / "out")


def test_refuses_to_overwrite_without_force(pickled_checkpoint, tmp_path):
    dst = tmp_path / "out"
    convert(pickled_checkpoint, dst)
    (dst / "stale.txt").write_text("from before")
    with pytest.raises(ConvertError, match="already exists; pass --force"):
        convert(pickled_checkpoint, dst, ConvertOptions(dtype="float16"))
    assert (dst / "stale.txt").exists() and set(stored_names(dst).values()) == {torch.float32}

    # --force replaces a checkpoint folder, not whatever else a folder holds (it replaced a home folder whole).
    with pytest.raises(ConvertError, match="holds stale.txt, which is no checkpoint file"):
        convert(pickled_checkpoint, dst, ConvertOptions(dtype="float16", force=True))
    assert (dst / "stale.txt").exists() and set(stored_names(dst).values()) == {torch.float32}

    (dst / "stale.txt").unlink()
    convert(pickled_checkpoint, dst, ConvertOptions(dtype="float16", force=True))
    assert set(stored_names(dst).values()) == {torch.float16}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "temporary or backup directories were left"


def test_force_leaves_a_folder_that_is_no_checkpoint_as_it_was(pickled_checkpoint, tmp_path):
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("years of work")
    (home / "config.json").write_text("{}")
    with pytest.raises(ConvertError, match="holds docs, which is no checkpoint file"):
        convert(pickled_checkpoint, home, ConvertOptions(force=True))
    assert (home / "docs" / "thesis.txt").read_text() == "years of work"


def test_a_training_checkpoint_is_unwrapped_and_other_entries_are_one_sentence(pickled_checkpoint, tmp_path):
    """torch.save({"state_dict": ..., "epoch": 3}) and a state dict with a step count in it were tracebacks
    (AttributeError: 'int' object has no attribute 'device')."""
    state = torch.load(pickled_checkpoint / "pytorch_model.bin", weights_only=True)
    for name, saved in (("wrapped", {"state_dict": state, "epoch": 3}), ("extra", {**state, "step": 5})):
        src = tmp_path / name
        shutil.copytree(pickled_checkpoint, src)
        torch.save(saved, src / "pytorch_model.bin")
        if name == "wrapped":
            convert(src, tmp_path / "out")
            torch.testing.assert_close(probe(tmp_path / "out"), probe(pickled_checkpoint))
        else:
            with pytest.raises(CheckpointError, match="holds 'step', a int, among its weights"):
                convert(src, tmp_path / "out-extra")


def test_refuses_a_destination_inside_the_source(pickled_checkpoint):
    with pytest.raises(ConvertError, match="overlaps the source"):
        convert(pickled_checkpoint, pickled_checkpoint / "converted")


def test_config_rewrite(pickled_checkpoint, tmp_path):
    dst = tmp_path / "full"
    options = ConvertOptions(attention_type="original_full", block_size=32, num_random_blocks=1, verify=True)
    report = convert(pickled_checkpoint, dst, options)
    config = json.loads((dst / "config.json").read_text())
    assert (config["attention_type"], config["block_size"], config["num_random_blocks"]) == ("original_full", 32, 1)
    assert report["attention_type"] == "original_full"
    # Full attention sees every token, the block-sparse source does not: the outputs differ, and verify says so.
    assert report["verify"]["max_abs_diff"] > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ConvertOptions(block_size=48), "block size 48 does not divide the model's 512 positions"),
        (ConvertOptions(block_size=0), "block size must be positive"),
        (ConvertOptions(attention_type="sparse"), "unknown attention type 'sparse'"),
        (ConvertOptions(num_random_blocks=-1), "random blocks can't be negative"),
        (ConvertOptions(dtype="int8"), "unknown dtype 'int8'"),
        (ConvertOptions(max_shard_size="big"), "is not a size"),
    ],
)
def test_refuses_settings_the_model_cannot_run(pickled_checkpoint, tmp_path, options, message):
    with pytest.raises(ConvertError, match=message):
        convert(pickled_checkpoint, tmp_path / "out", options)
    assert not list(tmp_path.iterdir())


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1.5 KiB") == 1536
    assert parse_size("1000") == 1000


# --------------------------------------------------------------------------------------------------
# Through the command line
# --------------------------------------------------------------------------------------------------
def invoke(*args: str):

    return CliRunner().invoke(app, ["convert", *args])


def test_cli_prints_one_json_object(pickled_checkpoint, tmp_path):
    dst = tmp_path / "out"
    result = invoke(str(pickled_checkpoint), str(dst), "--dtype", "bfloat16", "--max-shard-size", "30KB", "--verify")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["destination"] == str(dst) and report["dtype"] == "bfloat16" and report["shards"] > 1
    assert set(report["files"]) >= {str(dst / "model.safetensors.index.json"), str(dst / "config.json")}
    assert report["verify"]["max_abs_diff"] < 0.05

    again = invoke(str(pickled_checkpoint), str(dst))
    assert again.exit_code == 2 and again.stdout == ""
    assert "already exists; pass --force" in again.stderr
    assert invoke(str(pickled_checkpoint), str(dst), "--force").exit_code == 0


def test_cli_refuses_bad_settings(pickled_checkpoint, tmp_path):
    result = invoke(str(pickled_checkpoint), str(tmp_path / "out"), "--block-size", "100")
    assert result.exit_code == 2 and "does not divide" in result.stderr
    result = invoke(str(pickled_checkpoint), str(tmp_path / "out"), "--attention-type", "sparse")
    assert result.exit_code == 2  # not one of the choices: a usage error
    assert not (tmp_path / "out").exists()


def test_pegasus_bin_with_shared_embeddings(tmp_path):
    """transformers' BigBirdPegasus pickles share one embedding among four names; safetensors stores it once."""
    transformers = pytest.importorskip("transformers")
    from bigbird.models.pegasus import BigBirdPegasusForConditionalGeneration

    config = transformers.BigBirdPegasusConfig(
        vocab_size=300,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=512,
        block_size=16,
        num_random_blocks=2,
    )
    torch.manual_seed(0)
    theirs = transformers.BigBirdPegasusForConditionalGeneration(config).eval()
    src = tmp_path / "src"
    src.mkdir()
    config.to_json_file(src / "config.json")
    torch.save(theirs.state_dict(), src / "pytorch_model.bin")

    report = convert(src, tmp_path / "dst", ConvertOptions(verify=True))
    assert sorted(report["dropped_tied"]) == [
        "lm_head.weight",
        "model.decoder.embed_tokens.weight",
        "model.encoder.embed_tokens.weight",
    ]
    assert report["verify"]["max_abs_diff"] == 0.0
    ids = torch.randint(5, 300, (1, 200), generator=torch.Generator().manual_seed(0))
    decoder_ids = ids[:, :7]
    with torch.inference_mode():
        expected = theirs(input_ids=ids, decoder_input_ids=decoder_ids).logits
        reloaded = transformers.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path / "dst").eval()
        ours = BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path / "dst")
        torch.testing.assert_close(reloaded(input_ids=ids, decoder_input_ids=decoder_ids).logits, expected)
        torch.testing.assert_close(ours(input_ids=ids, decoder_input_ids=decoder_ids).logits, expected)


@pytest.mark.parametrize(
    ("family", "head"),
    [("bigbird", head) for head in BIGBIRD_HEADS] + [("pegasus", head) for head in PEGASUS_HEADS],
)
def test_verify_probes_every_head_with_inputs_it_takes(family, head, tmp_path):
    """Multiple choice takes (batch, choices, seq), Pegasus's causal LM takes no decoder ids, and its classifier
    reads the last </s> of each input: one probe for all gave a traceback after DST was written."""
    src = make_tiny_checkpoint(tmp_path / "src", family, head, vocab_size=300, max_position_embeddings=256)
    report = convert(src, tmp_path / "dst", ConvertOptions(verify=True))
    assert report["verify"]["max_abs_diff"] == 0.0


def test_a_weight_float16_cannot_hold_is_refused_and_verify_fails_on_inf(pickled_checkpoint, tmp_path):
    """A weight of 1e6 became inf in float16 without a word, and --verify then printed "max_abs_diff": NaN (no
    JSON number) with exit 0."""
    src = tmp_path / "big"
    shutil.copytree(pickled_checkpoint, src)
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["bert.encoder.layer.0.output.dense.weight"][0, 0] = 1e6
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(ConvertError, match="bert.encoder.layer.0.output.dense.weight holds 1e.06, beyond what float16"):
        convert(src, tmp_path / "half", ConvertOptions(dtype="float16"))
    assert not (tmp_path / "half").exists()
    assert convert(src, tmp_path / "bf16", ConvertOptions(dtype="bfloat16"))  # bfloat16 has the range
    # A DST whose outputs are not finite fails --verify, naming the output.
    weights = tmp_path / "bf16" / "model.safetensors"
    tensors = load_file(weights)
    tensors["bert.encoder.layer.0.output.dense.weight"][0, 0] = float("inf")
    save_file(tensors, weights)
    with pytest.raises(ConvertError, match="--verify.*differ by (nan|inf)"):
        verify(src, tmp_path / "bf16")


def test_a_revision_with_a_local_source_is_warned_about(pickled_checkpoint, tmp_path):
    """--revision v9 on a local folder converted the folder as it is, without a word."""
    report = convert(pickled_checkpoint, tmp_path / "out", ConvertOptions(revision="v9"))
    assert (
        f"--revision v9 names a Hub revision; {pickled_checkpoint} is a local folder, read as it is."
        in report["warnings"]
    )


def test_cli_verify_fails_with_exit_1_past_the_dtypes_tolerance(pickled_checkpoint, tmp_path, monkeypatch):
    """A conversion that damages a weight (here: one scaled by 1.5 on its way out) is written, its report printed,
    and --verify exits 1 with one sentence; the same conversion undamaged passes, and so does bfloat16's rounding."""
    from bigbird.tools import convert as module

    assert invoke(str(pickled_checkpoint), str(tmp_path / "good"), "--dtype", "bfloat16", "--verify").exit_code == 0
    prepare = module.prepare_tensors

    def damaged(tensors, config, dtype):
        tensors, dropped = prepare(tensors, config, dtype)
        name = next(n for n, t in tensors.items() if t.is_floating_point() and t.dim() == 2)
        tensors[name] = tensors[name] * 1.5
        return tensors, dropped

    monkeypatch.setattr(module, "prepare_tensors", damaged)
    result = invoke(str(pickled_checkpoint), str(tmp_path / "bad"), "--verify")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["verify"]["max_abs_diff"] > report["verify"]["tolerance"] > 0
    [line] = result.stderr.strip().splitlines()
    assert "--verify failed" in line and "more than float32 rounding explains" in line


def test_a_tokenizer_json_travels_and_serves_in_place_of_spiece_model(pickled_checkpoint, tmp_path):
    """A fine-tune saved by transformers 5 has tokenizer.json (and perhaps added_tokens.json), no spiece.model:
    both travel with the weights, and no warning says the result can't run the tasks (it was said before)."""
    src = tmp_path / "transformers-5"
    shutil.copytree(pickled_checkpoint, src, ignore=shutil.ignore_patterns("spiece.model"))
    (src / "tokenizer.json").write_text('{"model": {}}')
    (src / "added_tokens.json").write_text('{"[CITY]": 300}')
    report = convert(src, tmp_path / "out")
    for name in ("tokenizer.json", "added_tokens.json", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    assert not any("spiece.model" in warning for warning in report.get("warnings", []))
    (src / "tokenizer.json").unlink()
    report = convert(src, tmp_path / "bare")
    assert any("has neither a spiece.model nor a tokenizer.json" in warning for warning in report["warnings"])


def _damage(model: Path, how: str) -> None:
    weights = model / "model.safetensors"
    if how == "truncated-safetensors":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "empty-safetensors":
        weights.write_bytes(b"")
    elif how == "truncated-bin":
        from safetensors.torch import load_file

        torch.save(load_file(weights), model / "pytorch_model.bin")
        weights.unlink()
        data = (model / "pytorch_model.bin").read_bytes()
        (model / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    elif how == "index-without-weight-map":
        weights.rename(model / "model-00001-of-00001.safetensors")
        (model / "model.safetensors.index.json").write_text('{"metadata": {}}')


@pytest.mark.parametrize(
    "how", ["truncated-safetensors", "empty-safetensors", "truncated-bin", "index-without-weight-map"]
)
def test_convert_refuses_damaged_weights_leaving_nothing_behind(offline_hub, tiny_models, tmp_path, how):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["classify"], model)
    _damage(model, how)
    dst = tmp_path / "out" / "dst"
    result = cli("convert", model, dst)
    assert result.exit_code == 2 and one_sentence(result.output), result.output
    assert not dst.exists() and not any((tmp_path / "out").glob(".*")) if (tmp_path / "out").exists() else True


def test_convert_destinations_permissions_and_tokenizer_warning(offline_hub, tiny_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("convert", tiny_models["classify"], ".", "--force")
    assert result.exit_code == 2 and "current folder" in result.output and one_sentence(result.output)
    (tmp_path / "file").write_text("x")
    result = cli("convert", tiny_models["classify"], tmp_path / "file" / "dst")
    assert result.exit_code == 2 and one_sentence(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no stray temporary folders

    umask = os.umask(0o022)
    os.umask(umask)
    no_tokenizer = tmp_path / "weights-only"
    shutil.copytree(tiny_models["classify"], no_tokenizer, ignore=shutil.ignore_patterns("spiece.model", "token*"))
    result = cli("convert", no_tokenizer, tmp_path / "dst")
    assert result.exit_code == 0, result.output
    assert "has neither a spiece.model nor a tokenizer.json" in result.output
    assert (tmp_path / "dst").stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "dst").iterdir()} == {0o666 & ~umask}
