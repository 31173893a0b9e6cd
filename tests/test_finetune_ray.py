"""`bigbird finetune --engine ray`: Ray Train's TorchTrainer with 2 gloo workers on a local 2-CPU Ray ends where a
local run ends (each worker takes half of every global batch; their gradients are summed before the step), and a
missing Ray is one sentence.

The two runs differ only in the order of float additions (each worker pads and sums its half; gloo adds the two
halves), so the weights agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import json

import pytest
from conftest import jsonl
from safetensors.torch import load_file

from bigbird.tools.tiny import CORPUS, make_tiny_checkpoint


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_train_ends_where_the_local_run_ends(bigbird, ray_address, tmp_path):
    base = make_tiny_checkpoint(tmp_path / "base", "bigbird", "sequence_classification")
    rows = [{"id": str(i), "text": " ".join(CORPUS[i % 16 : i % 16 + 3]), "label": "ab"[i % 2]} for i in range(16)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = [
        "finetune",
        "classify",
        "--model",
        base,
        "--jsonl",
        data,
        "--eval-jsonl",
        data,
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--save-steps",
        "2",
        "--eval-steps",
        "2",
        "--learning-rate",
        "1e-2",
        "--threads",
        "1",
    ]
    bigbird(*common, "-o", tmp_path / "local", "--log", tmp_path / "local.log", check_rc=0)
    on_ray = bigbird(
        *common,
        "-o",
        tmp_path / "ray",
        "--log",
        tmp_path / "ray.log",
        "--engine",
        "ray",
        "--workers",
        "2",
        "--ray-address",
        ray_address,
        check_rc=0,
    )
    assert "training on Ray with 2 workers" in on_ray.stderr.decode()

    local, ray = load_file(tmp_path / "local" / "model.safetensors"), load_file(tmp_path / "ray" / "model.safetensors")
    base_weights = load_file(base / "model.safetensors")
    assert local.keys() == ray.keys()
    moved = max((local[k] - base_weights[k]).abs().max().item() for k in local if k in base_weights)
    differ = max((local[k] - ray[k]).abs().max().item() for k in local)
    assert moved > 1e-2 and differ < 1e-4, (moved, differ)  # measured: 0.0175 and 1.3e-5
    local_log, ray_log = jsonl(tmp_path / "local.log"), jsonl(tmp_path / "ray.log")
    assert [e["step"] for e in ray_log] == [1, 2, 3, 4]
    for a, b in zip(local_log, ray_log, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["lr"] == b["lr"]
        assert a.get("dev") == b.get("dev")
    assert (tmp_path / "ray" / "checkpoint" / "state.pt").is_file()


def test_missing_ray_train_is_one_sentence(bigbird, tmp_path):
    (tmp_path / "ray.py").write_text("raise ImportError('No module named ray')\n")  # what a Ray-less install sees
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"text": "hi", "label": "a"}) + "\n")
    result = bigbird(
        "finetune",
        "classify",
        "--jsonl",
        data,
        "-o",
        tmp_path / "o",
        "--engine",
        "ray",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 2
    assert (
        result.stderr.decode() == "error: --engine ray needs Ray Train (pip install "
        "'bigbird-cli[ray]', which installs ray[train]).\n"
    )
