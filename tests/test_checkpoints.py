"""Checkpoint I/O: weight formats, refusing code-carrying pickles, clear errors, configs, and Hub-cache lookup."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from conftest import cli, one_sentence

import bigbird
from bigbird.models.checkpoints import CheckpointError, checkpoint_state_dict, read_state_dict, write_safetensors
from bigbird.models.presets import PEGASUS_TINY

TINY = dict(
    vocab_size=80,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=256,
    block_size=8,
    num_random_blocks=1,
)


def tiny_model(cls=bigbird.BigBirdForMaskedLM, **overrides):
    torch.manual_seed(0)
    return cls(bigbird.BigBirdConfig(**TINY, **overrides)).eval()


def logits(model, ids=None):
    ids = torch.arange(3, 40)[None] if ids is None else ids
    with torch.no_grad():
        out = model(ids)
    return out.logits if "logits" in out else out.last_hidden_state


def test_pytorch_bin_single_and_sharded(tmp_path):
    model = tiny_model()
    model.config.save_pretrained(tmp_path / "single")
    torch.save(checkpoint_state_dict(model), tmp_path / "single" / "pytorch_model.bin")
    loaded = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path / "single")
    assert torch.equal(logits(loaded), logits(model))

    sharded = tmp_path / "sharded"
    model.config.save_pretrained(sharded)
    tensors = checkpoint_state_dict(model)
    names = sorted(tensors)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    weight_map = {}
    for shard, keys in halves.items():
        torch.save({k: tensors[k] for k in keys}, sharded / shard)
        weight_map.update(dict.fromkeys(keys, shard))
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert torch.equal(logits(bigbird.BigBirdForMaskedLM.from_pretrained(sharded)), logits(model))


def test_sharded_safetensors(tmp_path):
    model = tiny_model()
    model.config.save_pretrained(tmp_path)
    tensors = checkpoint_state_dict(model)
    names = sorted(tensors)
    weight_map = {}
    for i, keys in enumerate((names[:5], names[5:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        write_safetensors({k: tensors[k] for k in keys}, tmp_path / shard)
        weight_map.update(dict.fromkeys(keys, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert torch.equal(logits(bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)), logits(model))


class RunsCode:
    """Unpickling this would call `Path.touch` on a marker file: it stands for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_safetensors_read_here_equal_safetensors_own_reading_and_a_cut_file_is_refused(tmp_path):
    """Our reader (straight into torch's memory, see _read_safetensors) against the safetensors library's, over
    every element type a checkpoint may hold, a scalar and an empty tensor; each tensor on torch's 64-byte grid.
    The file cut anywhere, or a header claiming more than there is, is one CheckpointError."""
    from safetensors.torch import load_file, save_file

    from bigbird.models.checkpoints import SAFETENSORS_DTYPES

    path = tmp_path / "model.safetensors"
    tensors = {f"t.{dtype}": (torch.randn(3, 5) * 4).to(dtype) for dtype in SAFETENSORS_DTYPES.values()}
    tensors |= {"scalar": torch.tensor(2.5), "empty": torch.zeros(0, 7, dtype=torch.bfloat16)}
    save_file(tensors, str(path))
    ours, theirs = read_state_dict(tmp_path), load_file(str(path))
    assert ours.keys() == theirs.keys() == tensors.keys()
    for name, tensor in theirs.items():
        mine = ours[name]
        assert mine.dtype == tensor.dtype and mine.shape == tensor.shape and mine.data_ptr() % 64 == 0
        assert torch.equal(mine.view(-1).view(torch.uint8), tensor.view(-1).view(torch.uint8)), name
    whole = path.read_bytes()
    for cut in [0, 7, 8, 12, len(whole) // 2, len(whole) - 1]:
        path.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match="not a whole safetensors file") as refused:
            read_state_dict(tmp_path)
        assert str(refused.value).startswith(f"{path} is"), refused.value  # the folder too, not the file's name
    path.write_bytes(b"\xff" * 8 + whole[8:])
    with pytest.raises(CheckpointError, match="not a whole safetensors file"):
        read_state_dict(tmp_path)

    def write(header: dict, data: bytes) -> None:
        text = json.dumps(header).encode()
        path.write_bytes(len(text).to_bytes(8, "little") + text + data)

    # Two names over the same bytes (a header that could make a reader allocate far more than the file holds).
    write(
        {
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        },
        bytes(16),
    )
    with pytest.raises(CheckpointError, match="not a whole safetensors file"):
        read_state_dict(tmp_path)
    write({"a": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}}, bytes(16))
    with pytest.raises(CheckpointError, match="not a whole safetensors file"):
        read_state_dict(tmp_path)
    write({"a": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}, bytes(16))
    with pytest.raises(CheckpointError, match="holds a as C64, a type bigbird-cli doesn't read"):
        read_state_dict(tmp_path)
    write(
        {"__metadata__": {"format": "pt"}, "a": {"dtype": "I16", "shape": [2, 4], "data_offsets": [0, 16]}},
        bytes(range(16)),
    )
    assert torch.equal(read_state_dict(tmp_path)["a"], load_file(str(path))["a"])


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    tiny_model().config.save_pretrained(tmp_path)
    torch.save({"bert.embeddings.word_embeddings.weight": RunsCode(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to load .*pytorch_model.bin"):
        bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)
    assert not marker.exists()


def test_saved_weights_get_an_ordinary_files_mode(tmp_path):
    """safetensors writes its files private (0600): a checkpoint saved for a group or another user could not be
    read by them, while its config.json could. Now every file of a saved model has the umask's mode."""
    previous = os.umask(0o022)
    try:
        tiny_model().save_pretrained(tmp_path)
        write_safetensors({"x": torch.zeros(2)}, tmp_path / "shard.safetensors")
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes["model.safetensors"] == modes["shard.safetensors"] == modes["config.json"] == 0o644, modes


def test_missing_and_misshaped_weights_name_the_tensor(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    tensors = read_state_dict(tmp_path)
    del tensors["bert.encoder.layer.0.output.dense.weight"]
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"bert\.encoder\.layer\.0\.output\.dense\.weight is missing"):
        bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)
    tensors["bert.encoder.layer.0.output.dense.weight"] = torch.zeros(3, 3)
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"output\.dense\.weight has shape \(3, 3\)"):
        bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)


def test_tied_decoder_with_or_without_a_stored_copy(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert "cls.predictions.decoder.weight" not in read_state_dict(tmp_path)
    loaded = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)
    assert loaded.lm.decoder.weight is loaded.bert.embeddings.tokens.weight
    tensors = read_state_dict(tmp_path)
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"].clone()
    tensors["position_ids"] = torch.arange(4)  # stray buffers in old checkpoints are ignored
    write_safetensors(tensors, tmp_path / "model.safetensors")
    assert torch.equal(logits(bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)), logits(model))


def test_untied_decoder_is_loaded_from_the_file(tmp_path):
    model = tiny_model(tie_word_embeddings=False)
    with torch.no_grad():
        model.lm.decoder.weight.add_(1.0)
    model.save_pretrained(tmp_path)
    loaded = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)
    assert loaded.lm.decoder.weight is not loaded.bert.embeddings.tokens.weight
    assert torch.equal(logits(loaded), logits(model))


def test_weights_read_as_one_storage_become_separate_weights(tmp_path):
    """The loader hands the tensors it read to the model rather than copying them in; where a file holds one
    storage under two names (a pickle of a tied model) and the model keeps them apart, each gets its own memory,
    so changing one leaves the other alone. In another type the file's tensor is converted."""
    model = tiny_model(tie_word_embeddings=False)
    tensors = checkpoint_state_dict(model)
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]  # one storage
    tensors["bert.encoder.layer.0.output.dense.weight"] = tensors["bert.encoder.layer.0.output.dense.weight"].half()
    model.config.save_pretrained(tmp_path)
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    loaded = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)
    decoder, embeddings = loaded.lm.decoder.weight, loaded.bert.embeddings.tokens.weight
    assert torch.equal(decoder, embeddings)
    with torch.no_grad():
        decoder.add_(1.0)
    assert torch.equal(embeddings, tensors["bert.embeddings.word_embeddings.weight"])
    storages = [p.untyped_storage().data_ptr() for p in loaded.parameters()]
    assert len(set(storages)) == len(storages)
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in loaded.parameters())


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc to see a process's mappings")
def test_a_loaded_model_owns_its_weights_and_saving_over_its_folder_is_safe(tmp_path):
    """The weights must not stay views of the file they came from (safetensors maps it by default): a file
    rewritten in place under a model would fault it or change it. Once loaded, the process maps no checkpoint
    file; saving into the folder a model was loaded from gives back the same model."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    tensors = read_state_dict(tmp_path)  # (a tiny model's tensors lie off the 64-byte grid, so a load copies them)
    assert str(tmp_path) not in Path("/proc/self/maps").read_text()
    del tensors
    loaded = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)
    assert str(tmp_path) not in Path("/proc/self/maps").read_text()
    loaded.save_pretrained(tmp_path)
    assert not list(tmp_path.glob(".*partial"))
    assert torch.equal(logits(bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path)), logits(model))


def test_base_model_loads_from_a_head_checkpoint(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    base = bigbird.BigBirdModel.from_pretrained(tmp_path)
    with torch.no_grad():
        expected = model.bert(torch.arange(3, 40)[None]).last_hidden_state
    assert torch.equal(logits(base), expected)


def test_dtype_and_device_arguments(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    model = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path, dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and not model.training
    assert logits(model).dtype == torch.bfloat16


def test_config_keeps_unknown_keys_and_architectures(tmp_path):
    data = {
        "model_type": "big_bird",
        "architectures": ["BigBirdForQuestionAnswering"],
        "hidden_size": 16,
        "num_attention_heads": 4,
        "some_future_key": {"nested": [1, 2]},
        "id2label": {"0": "neg", "1": "pos"},
    }
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = bigbird.load_config(tmp_path)
    assert isinstance(config, bigbird.BigBirdConfig)
    assert config.some_future_key == {"nested": [1, 2]} and config.id2label == {0: "neg", 1: "pos"}
    assert config.num_labels == 2 and config.label2id == {"neg": 0, "pos": 1}
    config.save_pretrained(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["some_future_key"] == {"nested": [1, 2]}
    assert written["architectures"] == ["BigBirdForQuestionAnswering"]
    assert transformers.BigBirdConfig.from_pretrained(tmp_path / "out").id2label == {0: "neg", 1: "pos"}


def test_config_defaults_match_the_seed():
    ours = bigbird.BigBirdConfig().to_dict()
    theirs = transformers.BigBirdConfig().to_dict()
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert ours[key] == theirs[key]
    for key in ("hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "sep_token_id"):
        assert ours[key] == theirs[key]
    for key in ("attention_type", "use_bias", "rescale_embeddings", "block_size", "num_random_blocks"):
        assert ours[key] == theirs[key]


def test_not_a_checkpoint_is_one_clear_sentence(tmp_path):
    with pytest.raises(CheckpointError, match="is not a checkpoint directory"):
        bigbird.resolve_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="has no model.safetensors or pytorch_model.bin"):
        read_state_dict(tmp_path)


HUB_SCRIPT = textwrap.dedent(
    """
    import sys, bigbird
    from bigbird.models.checkpoints import CheckpointError
    path = bigbird.resolve_checkpoint("google/tiny-bird")
    print(path)
    model = bigbird.BigBirdForMaskedLM.from_pretrained("google/tiny-bird")
    try:
        bigbird.resolve_checkpoint("google/not-cached")
    except CheckpointError as err:
        print("ERROR", err)
    """
)


def test_hub_id_resolves_from_the_local_cache_offline(tmp_path):
    """A Hub id is looked up in HF_HOME's cache through huggingface_hub, with HF_HUB_OFFLINE=1 honoured."""
    snapshot = tmp_path / "hf" / "hub" / "models--google--tiny-bird" / "snapshots" / ("a" * 40)
    tiny_model().save_pretrained(snapshot)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert Path(lines[0]) == snapshot
    assert lines[1].startswith("ERROR model google/not-cached is not in the local Hub cache")
    assert lines[1].count(".") <= 2  # one sentence


def test_a_new_head_on_a_pretrained_body_starts_at_random_with_a_warning(tmp_path, caplog):
    """As the seed's examples do (a classifier on google/bigbird-roberta-base, to fine-tune); strict refuses it,
    as the tasks load, and a body weight missing is an error either way."""
    tiny_model().save_pretrained(tmp_path)  # a masked-LM checkpoint: no classifier
    with caplog.at_level("WARNING"):
        model = bigbird.BigBirdForSequenceClassification.from_pretrained(
            tmp_path, num_labels=3, problem_type="multi_label_classification"
        )
    assert model.config.num_labels == 3 and model.config.problem_type == "multi_label_classification"
    assert "classifier.dense.weight" in caplog.text and "initialised at random" in caplog.text
    body = bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path).bert.state_dict()
    for name, tensor in model.bert.state_dict().items():
        if name in body:  # the pretrained body is the checkpoint's
            assert torch.equal(tensor, body[name]), name
    with pytest.raises(CheckpointError, match="classifier.dense.weight is missing"):
        bigbird.BigBirdForSequenceClassification.from_pretrained(tmp_path, strict=True)
    tensors = read_state_dict(tmp_path)
    del tensors["bert.encoder.layer.0.output.dense.weight"]
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"output\.dense\.weight is missing"):
        bigbird.BigBirdForSequenceClassification.from_pretrained(tmp_path)


def _pegasus_tiny() -> bigbird.BigBirdPegasusForConditionalGeneration:
    torch.manual_seed(0)
    return bigbird.BigBirdPegasusForConditionalGeneration(bigbird.BigBirdPegasusConfig(**PEGASUS_TINY)).eval()


@pytest.mark.parametrize("build", [tiny_model, _pegasus_tiny], ids=["bigbird", "pegasus"])
def test_loading_a_whole_checkpoint_draws_no_random_weights(tmp_path, build):
    """The model is built without its random start, since every weight is loaded next: nothing is drawn (drawing
    pegasus-large's 570 M numbers was 9 of the 10 seconds of its load), and the model is the checkpoint's."""
    saved = build()
    saved.save_pretrained(tmp_path)
    before = torch.get_rng_state()
    loaded = type(saved).from_pretrained(tmp_path)
    assert torch.equal(torch.get_rng_state(), before)
    expected = saved.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert torch.equal(logits(loaded), logits(saved))


def test_a_new_head_is_drawn_by_the_rule_a_random_model_follows(tmp_path):
    """A head the checkpoint lacks is drawn when it is loaded (its layers were built without a start): normal(0,
    initializer_range) weights and zero biases, the same for the same seed."""
    tiny_model().save_pretrained(tmp_path)  # no classifier
    heads = []
    for _ in range(2):
        torch.manual_seed(1)
        heads.append(bigbird.BigBirdForSequenceClassification.from_pretrained(tmp_path, num_labels=3).classifier)
    std = heads[0].dense.weight.new_tensor(0.02)  # the config's initializer_range
    for layer in (heads[0].dense, heads[0].out):
        assert 0.5 * std < layer.weight.std() < 1.5 * std and layer.weight.mean().abs() < std
        assert not layer.bias.any()
    for mine, again in zip(heads[0].parameters(), heads[1].parameters(), strict=True):
        assert torch.equal(mine, again)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"block_size": 0}, "block_size"),
        ({"max_position_embeddings": 256.5}, "max_position_embeddings"),
        ({"hidden_size": 30}, "hidden_size"),
        ({"id2label": {"0": "a", "2": "c"}}, "id2label"),
        ({"id2label": {"zero": "a"}}, "id2label"),
    ],
)
@pytest.mark.parametrize("command", ["classify", "convert"])
def test_a_broken_config_is_one_sentence_naming_the_field(offline_hub, tiny_models, tmp_path, change, field, command):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["classify"], model)
    config = json.loads((model / "config.json").read_text())
    config.update(change)
    (model / "config.json").write_text(json.dumps(config))
    if command == "convert":
        result = cli("convert", model, tmp_path / "dst")
    else:
        result = cli("classify", "-m", model, "--text", "x", "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and field in result.output and one_sentence(result.output), result.output


def test_a_folder_that_is_no_checkpoint_or_another_familys_is_one_sentence(tmp_path):
    """from_pretrained on a folder without config.json raised FileNotFoundError from pathlib; on another family's
    checkpoint it reported the first weight missing, never saying whose checkpoint it was."""
    from bigbird.models.config import ConfigError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty has no config.json, so it is not a checkpoint"):
        bigbird.BigBirdForMaskedLM.from_pretrained(tmp_path / "empty")
    with pytest.raises(ConfigError, match="nowhere does not exist, so it is not a checkpoint"):
        bigbird.load_config(tmp_path / "nowhere")
    tiny_model().save_pretrained(tmp_path / "bigbird")
    with pytest.raises(ConfigError, match="holds a big_bird checkpoint, and BigBirdPegasusConfig reads"):
        bigbird.BigBirdPegasusForConditionalGeneration.from_pretrained(tmp_path / "bigbird")


def test_from_pretrained_checks_its_arguments_before_building(tmp_path):
    """attention_type="sparse" or block_size=0 loaded, then failed at the first forward (a ZeroDivisionError deep
    in the attention); device="cuda" without one and dtype="float8" failed inside torch."""
    from bigbird.models.config import ConfigError

    tiny_model().save_pretrained(tmp_path)
    load = bigbird.BigBirdForMaskedLM.from_pretrained
    with pytest.raises(ConfigError, match="from_pretrained's arguments: attention_type must be block_sparse or"):
        load(tmp_path, attention_type="sparse")
    with pytest.raises(ConfigError, match="from_pretrained's arguments: block_size must be a positive whole number"):
        load(tmp_path, block_size=0)
    for dtype in ("float8", "int8", torch.long):
        with pytest.raises(ValueError, match="is no floating-point torch type"):
            load(tmp_path, dtype=dtype)
    with pytest.raises(ValueError, match="device takes cpu, cuda, cuda:N or mps, not 'gpu'"):
        load(tmp_path, device="gpu")
    with pytest.raises(ValueError, match="is no floating-point torch type"):  # before the Hub is asked for it
        load("google/no-such-model-here", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device cuda: no such device is available on this machine"):
            load(tmp_path, device="cuda")
    assert load(tmp_path, torch_dtype="bfloat16").bert.embeddings.tokens.weight.dtype == torch.bfloat16
