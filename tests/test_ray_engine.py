"""`--engine ray`: the same records as a local run, in the same order, on one local Ray of 2 CPUs shared by the
module (workers take half a CPU each, so the pool never holds the whole cluster); eval; resume; the two usage
errors.

The CLI runs are drivers joining that one cluster through --ray-address, so Ray starts once, not per run.
`--threads 1` on both sides makes the local run compute exactly what a one-thread Ray worker computes.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from conftest import jsonl

from bigbird.tasks import TaskError
from bigbird.tasks.documents import Document
from bigbird.tasks.records import make_record
from bigbird_cli.engines.ray import BUCKETS_PER_WORKER, RayEngine, RaySettings, TaskWorker

RAY = ("--engine", "ray", "--workers", "2", "--cpus-per-worker", "0.5")


@pytest.fixture(scope="session")
def ray_address():
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def inputs(corpus, tmp_path_factory):
    """Readable documents of several lengths (one beyond the tiny window) and three unreadable ones."""
    records = tmp_path_factory.mktemp("ray-inputs") / "records.jsonl"
    records.write_text(
        json.dumps({"id": "j-good", "text": "The committee met on Tuesday to review the budget."})
        + "\n{broken json\n"
        + json.dumps({"id": "j-nofield"})
        + "\n"
    )
    return [corpus, "--text", "Plants create energy through photosynthesis.", "--text", "", "--jsonl", records]


TASK_ARGS = {"classify": (), "summarize": ("--max-new-tokens", "6")}


@pytest.fixture(scope="module")
def local_run(bigbird, tiny_models, inputs):
    """The local run of a task over `inputs` (made once): its arguments and result."""
    done = {}

    def run(task):
        if task not in done:
            args = [task, *inputs, "-m", tiny_models[task], "--threads", "1", "--batch-size", "2", *TASK_ARGS[task]]
            done[task] = args, bigbird(*args, check_rc=1)
        return done[task]

    return run


def timeless(records: list[dict]) -> list[dict]:
    """Records without `seconds`, the one field that is a wall time (it differs from run to run)."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in records]


@pytest.mark.parametrize("task", TASK_ARGS)
def test_ray_gives_the_local_records_in_the_same_order(bigbird, local_run, ray_address, task):
    args, local = local_run(task)
    on_ray = bigbird(*args, *RAY, "--ray-address", ray_address, check_rc=1)
    assert timeless(jsonl(on_ray.stdout)) == timeless(jsonl(local.stdout))
    records = jsonl(local.stdout)
    assert len(records) == 8 and sum("error" in r for r in records) == 3
    assert on_ray.stderr.decode().splitlines() == local.stderr.decode().splitlines()  # no Ray noise either


def test_eval_on_ray_gives_the_local_records_and_report(bigbird, tiny_models, ray_address, tmp_path):
    labelled = tmp_path / "labelled.jsonl"
    rows = [("I loved it, a wonderful film.", 2), ("Terrible, boring and too long.", "negative"), ("Meh.", None)]
    labelled.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    args = ["eval", "classify", "-m", tiny_models["classify"], "--jsonl", labelled, "--threads", "1"]
    local = bigbird(*args, check_rc=1)
    on_ray = bigbird(*args, *RAY, "--ray-address", ray_address, check_rc=1)
    assert timeless(jsonl(on_ray.stdout)) == timeless(jsonl(local.stdout))  # scored records, then the report
    assert jsonl(local.stdout)[-1]["documents"] == 3 and on_ray.stderr == local.stderr


def test_eval_summarize_on_ray_reports_the_generation_settings_as_run(bigbird, tiny_models, ray_address, tmp_path):
    """The Task that ran lives on the workers; the report's generation settings come from a dry run of the same
    options here, and equal the local run's."""
    labelled = tmp_path / "abstracts.jsonl"
    rows = [("The committee met on Tuesday to review the budget.", "A budget review."), ("Plants grow.", "Growth.")]
    labelled.write_text("".join(json.dumps({"text": text, "abstract": ref}) + "\n" for text, ref in rows))
    args = [
        "eval",
        "summarize",
        "-m",
        tiny_models["summarize"],
        "--jsonl",
        labelled,
        "--reference-field",
        "abstract",
        "--threads",
        "1",
        "--max-new-tokens",
        "5",
    ]
    local = bigbird(*args, check_rc=0)
    on_ray = bigbird(*args, *RAY, "--ray-address", ray_address, check_rc=0)
    assert timeless(jsonl(on_ray.stdout)) == timeless(jsonl(local.stdout))
    generation = jsonl(on_ray.stdout)[-1]["settings"]["generation"]
    assert generation["max_length"] == 6 and generation["num_beams"] == 2  # --max-new-tokens + start; the checkpoint's


def test_resume_on_ray_completes_a_torn_file(bigbird, local_run, ray_address, tmp_path):
    args, local = local_run("classify")
    clean = jsonl(local.stdout)
    out = tmp_path / "out.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in clean]
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # two whole records and a line cut by a kill
    result = bigbird(*args, *RAY, "--ray-address", ray_address, "-o", out, "--resume", check_rc=1)
    assert sorted(timeless(jsonl(out)), key=lambda r: r["id"]) == sorted(timeless(clean), key=lambda r: r["id"])
    assert "2 skipped (already done)" in result.stderr.decode()


def test_missing_ray_is_one_sentence(bigbird, tiny_models, tmp_path):
    (tmp_path / "ray.py").write_text("raise ImportError('No module named ray')\n")  # what a Ray-less install sees
    result = bigbird(
        "classify", "--text", "hi", "-m", tiny_models["classify"], "--engine", "ray", env={"PYTHONPATH": str(tmp_path)}
    )
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == "error: --engine ray needs Ray: pip install 'bigbird-cli[ray]'.\n"


def test_unreachable_ray_address_is_one_sentence(bigbird, tiny_models):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    result = bigbird(
        "classify", "--text", "hi", "-m", tiny_models["classify"], "--engine", "ray", "--ray-address", address
    )
    assert result.returncode == 2 and result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith(f"error: no Ray cluster answers at {address}") and stderr.count("\n") == 1


def test_ray_options_need_the_ray_engine(bigbird, tiny_models):
    result = bigbird("classify", "--text", "hi", "-m", tiny_models["classify"], "--workers", "2")
    assert result.returncode == 2 and "add --engine ray" in result.stderr.decode()


# The worker itself, without Ray: the local engine's bucket loop, and a task that can't start.


class Shout:
    model_name = "fake"
    warnings = ["shout less"]  # what a Task warns about its options: the driver prints it once

    def __call__(self, docs, size):
        if any("boom" in d.text for d in docs):
            raise RuntimeError("boom happened")
        return [make_record(d, "fake", input_tokens=1, truncated=False, chunks=1, out=d.text.upper()) for d in docs]


def bucket_of(*texts):
    warnings = [None, None, "bad bytes replaced."]
    return [Document(f"d{i}", "test", text, warning=warnings[i % 3]) for i, text in enumerate(texts)]


def test_worker_maps_a_bucket_with_the_runners_error_records(tmp_path):
    worker = TaskWorker(Shout, batch_size=3, threads=None, cwd=str(tmp_path))
    failure, warnings, records = worker.records(bucket_of("a", "boom", "c"))
    assert [r["id"] for r in records] == ["d0", "d1", "d2"] and failure == "" and warnings == ["shout less"]
    assert records[0]["out"] == "A" and records[2]["out"] == "C" and records[2]["warning"] == "bad bytes replaced."
    assert records[1]["error"] == "RuntimeError: boom happened." and records[1]["chunks"] == 0


def test_worker_reports_a_task_that_cannot_start(tmp_path):
    def no_model():
        raise TaskError("model ./nowhere can't be found.")

    worker = TaskWorker(no_model, batch_size=1, threads=None, cwd=str(tmp_path))
    assert worker.records(bucket_of("a", "b")) == ("model ./nowhere can't be found.", [], [])


# The driver's dispatch, on the module's Ray (this process joins it).


class DiesOn(Shout):
    """A task whose worker process dies on a document that says "die" (as one killed for its memory would)."""

    def __call__(self, docs, size):
        if any(d.text == "die" for d in docs):
            os._exit(1)
        return super().__call__(docs, size)


def counted(texts, pulled):
    for i, text in enumerate(texts):
        pulled.append(i)
        yield Document(f"d{i}", "test", text)


@pytest.fixture
def workers_import_this_module():
    """Ray workers can't import the tests folder: the fake tasks below travel by value instead of by name."""
    from ray import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


ONE_WORKER = RaySettings(address=None, workers=1, cpus_per_worker=0.5, gpus_per_worker=0, batch_size=1, threads=1)


def test_the_driver_reads_only_the_buckets_its_workers_hold(ray_address, workers_import_this_module, capsys):
    pulled = []
    records = RayEngine(Shout, "fake", ONE_WORKER)(counted([f"text {i}" for i in range(12)], pulled))
    first = next(records)
    assert first["id"] == "d0" and len(pulled) == BUCKETS_PER_WORKER + 1  # both held, and the one waiting for room
    assert [r["out"] for r in [first, *records]] == [f"TEXT {i}" for i in range(12)]
    assert capsys.readouterr().err.count("shout less") == 1  # the Task's warning, printed once for the pool


def test_a_worker_that_dies_costs_only_the_bucket_it_was_running(ray_address, workers_import_this_module):
    texts = ["a", "b", "die", "c", "d", "e"]
    records = list(RayEngine(DiesOn, "fake", ONE_WORKER)(counted(texts, [])))
    assert [r["id"] for r in records] == [f"d{i}" for i in range(6)]
    assert records[2]["error"].startswith("the Ray worker running it failed")
    assert [r.get("out") for r in records] == ["A", "B", None, "C", "D", "E"]  # "c", queued behind it, went on


def test_a_worker_that_cannot_unpickle_the_task_is_one_sentence(ray_address):
    """Without the fixture above, the workers can't import this module: the run stops with the reason, once."""
    with pytest.raises(TaskError, match="No module named 'test_ray_engine'.*installed on every node"):
        list(RayEngine(Shout, "fake", ONE_WORKER)(counted(["a", "b", "c"], [])))


class AlwaysDies(Shout):
    """A model that can't run on a worker at all (as one too big for its memory): every worker dies at once."""

    def __call__(self, docs, size):
        os._exit(1)


def test_workers_that_keep_dying_before_any_result_stop_the_run(ray_address, workers_import_this_module):
    texts = [f"text {i}" for i in range(20)]
    with pytest.raises(TaskError, match="3 Ray workers in a row stopped before giving any result"):
        list(RayEngine(AlwaysDies, "fake", ONE_WORKER)(counted(texts, [])))


def test_a_pool_no_node_can_hold_is_one_sentence(ray_address):
    on_gpus = RaySettings(address=None, workers=None, cpus_per_worker=0.5, gpus_per_worker=1, batch_size=1, threads=1)
    with pytest.raises(TaskError, match="no node of the Ray cluster has room for a worker of 1 GPU"):
        list(RayEngine(Shout, "fake", on_gpus)(counted(["a"], [])))


def test_text_printed_to_stdout_while_ray_runs_stays_out_of_the_records(capfd):
    """Ray's driver prints a worker's death to sys.stdout, which would land between JSONL records."""
    from bigbird_cli.engines.ray import _python_stdout_for_records_only
    from bigbird_cli.jsonl import JsonlWriter

    with _python_stdout_for_records_only():
        writer = JsonlWriter(sys.stdout)
        writer.write({"id": "a"})
        print("(raylet) A worker died or was killed while executing a task")
        writer.write({"id": "b"})
    assert capfd.readouterr().out == '{"id": "a"}\n{"id": "b"}\n'


@pytest.mark.parametrize(
    ("workers", "free_cpus", "expected"), [(None, 2.0, 4), (None, 1.0, 2), (None, 0.0, 1), (3, 2.0, 3), (8, 2.0, 4)]
)
def test_the_pool_is_what_the_nodes_hold_and_others_leave_free(monkeypatch, workers, free_cpus, expected):
    import ray

    from bigbird_cli.engines import ray as ray_engine

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 1.0}}] * 2)
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": free_cpus})
    settings = RaySettings(
        address=None, workers=workers, cpus_per_worker=0.5, gpus_per_worker=0, batch_size=1, threads=1
    )
    assert ray_engine._pool_size(settings) == expected


class WaitsForRelease(Shout):
    """A slow bucket: the document "slow" runs until the driver has read the document that releases it (or 30 s)."""

    def __call__(self, docs, size):
        import time

        for d in docs:
            if d.text == "slow":
                release = Path(d.fields["release"])
                deadline = time.monotonic() + 30
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                d.text = "released" if release.exists() else "timed out"
        return super().__call__(docs, size)


def test_a_slow_bucket_does_not_idle_the_other_workers(ray_address, workers_import_this_module, tmp_path):
    """Records go out in input order, but a worker that finished its buckets takes new ones: the driver reads on
    while the first bucket runs, and the first bucket waits for the driver to have read the seventh document."""
    release = tmp_path / "release"

    def docs():
        for i in range(12):
            if i == 7:
                release.touch()
            yield Document(f"d{i}", "test", "slow" if i == 0 else f"text {i}", fields={"release": str(release)})

    two = RaySettings(address=None, workers=2, cpus_per_worker=0.5, gpus_per_worker=0, batch_size=1, threads=1)
    records = list(RayEngine(WaitsForRelease, "fake", two)(docs()))
    assert [r["id"] for r in records] == [f"d{i}" for i in range(12)]
    assert records[0]["out"] == "RELEASED"  # not "TIMED OUT": the driver did not wait for the first bucket


def test_sigterm_on_ray_stops_in_order(tiny_models, ray_address, tmp_path):
    """ray.init put its own SIGTERM handler in place of the runner's: exit 134 or 15, without a word."""
    import signal

    from conftest import stopped_run

    out = tmp_path / "out.jsonl"
    # The driver reads ahead to keep its workers busy: enough lines to fill their buckets, stdin left open.
    lines = ['{"id": "b", "text": "no mask"}'] + [f'{{"id": "a{i}", "text": "A [MASK] here."}}' for i in range(64)]
    args = ["mask", "--jsonl", "-", "-m", tiny_models["mask"], "-o", out, *RAY, "--ray-address", ray_address]
    code, _, stderr = stopped_run(args, b"no [MASK] token", signal.SIGTERM, stdin="\n".join(lines).encode() + b"\n")
    assert code == 143
    assert f"terminated; the records written so far are whole: rerun with --resume -o {out}" in stderr
    assert jsonl(out)[0]["id"] == "b"  # whole lines, in input order
