"""`--engine ray`: the runner's documents → records step on a Ray cluster.

Ray Data's `map_batches` runs `TaskWorker` on a pool of actors; each builds the Task once (one model load per
worker) and turns windows of documents into records with the runner's own `window_records`, so batching by
length and error records for failing documents are exactly the local ones. Everything else stays on the driver,
in the runner: reading inputs, shards, `--resume`, the JSONL writer, progress and exit codes. Records come back in
input order (`preserve_order`), as JSON lines, since their fields differ from task to task.

It lives beside the runner, not in core, because the workers run the runner's window loop. Ray is imported only
here, and only for `--engine ray`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core.tasks import TaskError
from core.tasks.documents import Document, describe
from core.tasks.records import Record, error_record

from .options import CommonOptions
from .runner import Engine, RecordMaker, set_threads, window_records, window_size

# The object store of a Ray started for the run: documents and records are text, so a small store is plenty, and
# Ray's default (30% of memory) would take gigabytes a small machine needs for the models.
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20
# What the workers need from the driver's environment to find the same model (Hub cache, token, offline mode).
FORWARDED_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN")
PROBE_TIMEOUT_S = 5.0
START_HINT = "start one with `ray start --head`, or leave out --ray-address (and RAY_ADDRESS) for a local Ray."


@dataclass(frozen=True)
class RaySettings:
    """Where to run and how big the actor pool is; `workers` None means as many as the cluster's resources hold."""

    address: str | None
    workers: int | None
    cpus_per_worker: float
    gpus_per_worker: float
    batch_size: int
    threads: int | None

    @classmethod
    def from_options(cls, common: CommonOptions) -> RaySettings:
        return cls(
            address=common.ray_address or None,
            workers=common.workers,
            cpus_per_worker=common.cpus_per_worker or 1.0,
            gpus_per_worker=common.gpus_per_worker or 0.0,
            batch_size=common.batch_size,
            threads=common.threads,
        )


class TaskWorker:
    """One Ray actor: builds the Task once, then maps batches of document rows to records (one JSON line each).

    A task that can't start is not raised (Ray would print the traceback of every actor retry): it is reported in
    the `failure` column, and the driver turns it into the one-sentence usage error a local run gives.
    """

    def __init__(self, make_task: Callable[[], RecordMaker], batch_size: int, threads: int | None, cwd: str) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # a relative model path means what it means on the driver (on a shared filesystem)
        set_threads(threads)
        self.batch_size = batch_size
        self.task: RecordMaker | None = None
        self.failure = ""
        try:
            self.task = make_task()
        except TaskError as exc:
            self.failure = str(exc)
        except Exception as exc:  # anything else that stops the model loading on this worker
            self.failure = f"the task could not start on a Ray worker ({describe(exc)})."

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        docs = [
            Document(str(i), str(s), str(t), warning=w or None, fields=json.loads(f))
            for i, s, t, w, f in zip(
                batch["id"], batch["source"], batch["text"], batch["warning"], batch["fields"], strict=True
            )
        ]
        if self.task is None:
            lines = [""] * len(docs)
        else:
            lines = [json.dumps(r, ensure_ascii=False) for r in window_records(self.task, docs, self.batch_size)]
        return {"record": np.array(lines, dtype=object), "failure": np.array([self.failure] * len(docs), dtype=object)}


def _row(doc: Document) -> dict[str, str]:
    return {
        "id": doc.id,
        "source": doc.source,
        "text": doc.text,
        "warning": doc.warning or "",
        "fields": json.dumps(doc.fields, ensure_ascii=False, default=str),
    }


@contextmanager
def ray_engine(make_task: Callable[[], RecordMaker], model_name: str, settings: RaySettings) -> Iterator[Engine]:
    """Connect to Ray (or start a local Ray for the run) and yield the engine; Ray is shut down on exit.

    Raises TaskError with one sentence when Ray is not installed or the cluster can't be reached.
    """
    with _native_stderr_to_devnull():
        _connect(settings.address)
        import ray

        try:
            yield _records_on(make_task, model_name, settings)
        finally:
            ray.shutdown()


@contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Keep Ray's C++ log lines off the terminal, and Python's stderr on it.

    Ray's C++ core writes its error-level lines straight to file descriptor 2, among them a note on every Ray Data
    run that actor constructor arguments live in the object store (ray-project/ray#53727). Ray's log files under
    its session folder keep every such line. Python's `sys.stderr` (our messages, progress, warnings, tracebacks)
    is moved to a copy of the real stderr first, so only the native writes go to /dev/null.
    """
    sys.stderr.flush()
    real_fd = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(real_fd), "w", encoding="utf-8", errors="backslashreplace", buffering=1)  # noqa: SIM115
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()  # left open: handlers Ray's logging made during the run may still hold it
        os.dup2(real_fd, 2)
        os.close(real_fd)
        sys.stderr = python_stderr


def _records_on(make_task: Callable[[], RecordMaker], model_name: str, settings: RaySettings) -> Engine:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the runner shows its own progress
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    window = window_size(settings.batch_size)

    def records(docs: Iterator[Document]) -> Iterator[Record]:
        # The driver reads every document first (a Ray Dataset is built from a list); unreadable ones get their
        # error records here and are never sent.
        slots: list[Record | None] = []
        rows: list[dict[str, str]] = []
        for doc in docs:
            slots.append(error_record(doc, model_name, doc.error) if doc.error is not None else None)
            if doc.error is None:
                rows.append(_row(doc))
        results: Iterator[dict[str, Any]] = iter(())
        if rows:
            pool = min(_pool_size(settings), math.ceil(len(rows) / window))
            results = (
                ray.data.from_items(rows)
                .map_batches(
                    TaskWorker,
                    fn_constructor_kwargs={
                        "make_task": make_task,
                        "batch_size": settings.batch_size,
                        "threads": settings.threads,
                        "cwd": os.getcwd(),
                    },
                    batch_size=window,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=pool),
                    num_cpus=settings.cpus_per_worker,
                    num_gpus=settings.gpus_per_worker or None,
                )
                .iter_rows()
                .__iter__()
            )
        for slot in slots:
            if slot is not None:
                yield slot
                continue
            row = next(results)
            if row["failure"]:
                raise TaskError(row["failure"])
            yield json.loads(row["record"])

    return records


def _pool_size(settings: RaySettings) -> int:
    """--workers, or as many workers as the cluster's CPUs (GPUs when workers take GPUs) hold."""
    if settings.workers:
        return settings.workers
    import ray

    resources = ray.cluster_resources()
    if settings.gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) / settings.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) / settings.cpus_per_worker))


def _connect(address: str | None) -> None:
    """Import Ray and join the cluster at `address`, or start a local one; TaskError with one sentence if not."""
    try:
        import ray
    except ImportError:
        raise TaskError("--engine ray needs Ray: pip install 'bigbird-cli[ray]'.") from None
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "runtime_env": {"env_vars": env}}
    if address is not None:
        _probe(address)
    try:
        if address is None:
            ray.init(
                address="local",  # never silently join another cluster on this machine
                num_cpus=os.cpu_count(),
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                **quiet,
            )
        else:
            ray.init(address=address, **quiet)
    except ConnectionError:  # `auto` with no cluster on this machine, or a cluster that went away
        raise TaskError(f"no Ray cluster answers at {address}: {START_HINT}") from None
    except Exception as exc:  # Ray raises RuntimeError, ValueError... for the rest
        where = f"at {address}" if address else "locally"
        raise TaskError(f"Ray could not start {where}: {describe(exc)}.") from None


def _probe(address: str) -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at a HOST:PORT address."""
    if address == "auto" or "://" in address:
        return  # `auto` reads the local cluster's address file; Ray Client (ray://) fails fast by itself
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TaskError(f"--ray-address takes HOST:PORT or auto, not {address!r}.")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise TaskError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): {START_HINT}") from None
