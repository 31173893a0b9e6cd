"""`--engine ray`: the runner's documents → records step on a pool of Ray actors.

Each actor (`TaskWorker`) builds the Task once (one model load per worker) and turns read-ahead buckets of
documents into records with the local engine's own `bucket_records`, so batching by length and error records for
failing documents are exactly the local ones. Everything else stays on the driver, in the runner: reading inputs,
shards, `--resume`, the JSONL writer, progress and exit codes.

The driver streams. It sends a bucket only when a worker has room for it (a worker holds at most
`BUCKETS_PER_WORKER`, so it has the next one at hand while the driver waits for an earlier one), reading at most
one bucket ahead, and yields the records in input order as they come back; a worker that finished its buckets
takes new ones while an earlier, slower bucket runs (`FINISHED_AHEAD`). Its memory follows the pool, not the
size of the run. A worker that dies (killed, out of memory, its node lost) takes only the bucket it was running:
its documents become error records, the buckets queued behind it go to another worker, and the run goes on,
unless workers keep dying before giving any result (`DEATHS_BEFORE_STOPPING`), when the run stops with one
sentence.

It lives in the CLI, not in core, because the workers run the CLI's bucket loop (engines/local.py). Ray is
imported only here, and only for `--engine ray`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bigbird.models.heap import reuse_freed_memory
from bigbird.tasks import TaskError
from bigbird.tasks.documents import Document, describe
from bigbird.tasks.records import Record, error_record

from ..console import warn
from ..options import CommonOptions
from .local import Engine, RecordMaker, bucket_records, bucket_size, buckets, set_threads

# The object store of a Ray started for the run: documents and records are text, a few buckets at a time, so a
# small store is plenty, and Ray's default (30% of memory) would take gigabytes a small machine needs for the models.
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20
# What the workers need from the driver's environment to find the same model (Hub cache, token, offline mode).
FORWARDED_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN")
PROBE_TIMEOUT_S = 5.0
# Buckets a worker holds at most: the one it runs and the next, so it never waits for the driver.
BUCKETS_PER_WORKER = 2
# Buckets the driver keeps sent and not yet written, as a multiple of what the workers hold: a slow bucket holds
# the records of those after it (they go out in input order), not the workers that finished them.
FINISHED_AHEAD = 2
# Workers in a row that die before giving any result: then the model does not start there (too big for a worker's
# memory, say), and every document would fail after a model load of its own.
DEATHS_BEFORE_STOPPING = 3
INSTALL_HINT = "bigbird-cli must be installed on every node of the cluster."
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
            batch_size=common.batch_size or 1,  # the workers' memory is theirs: their tasks' defaults can't see it
            threads=common.threads,
        )


class TaskWorker:
    """One Ray actor: builds the Task once, then turns buckets of documents into their records.

    A task that can't start is not raised (Ray would print the traceback of every call): each call returns it as
    the failure, and the driver turns it into the one-sentence usage error a local run gives.
    """

    def __init__(self, make_task: Callable[[], RecordMaker], batch_size: int, threads: int | None, cwd: str) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # a relative model path means what it means on the driver (on a shared filesystem)
        set_threads(threads)
        reuse_freed_memory()  # as the CLI's own process does (bigbird_cli.app.main)
        self.batch_size = batch_size
        self.task: RecordMaker | None = None
        self.failure = ""
        try:
            self.task = make_task()
        except TaskError as exc:
            self.failure = str(exc)
        except Exception as exc:  # anything else that stops the model loading on this worker
            self.failure = f"the task could not start on a Ray worker ({describe(exc)})."

    def records(self, bucket: list[Document]) -> tuple[str, list[str], list[Record]]:
        """The failure that stopped the task from starting (""), what the Task warns about its options (for the
        driver to print, once), and the bucket's records, in its order."""
        if self.task is None:
            return self.failure, [], []
        warnings = list(getattr(self.task, "warnings", []))
        return "", warnings, list(bucket_records(self.task, bucket, self.batch_size))


@dataclass(eq=False)  # a worker is itself, whatever it holds
class _Worker:
    actor: Any  # a TaskWorker actor's handle
    held: int = 0  # buckets sent to it whose records the driver has not taken yet
    answered: bool = False  # whether it has given back a bucket's records (it started, and the model loaded)


class _Sent:
    """A bucket sent to a worker, the ObjectRef of its `TaskWorker.records` call, and whether that has finished
    (its worker is free for another bucket, though the records may wait for earlier buckets' to be taken)."""

    def __init__(self, bucket: list[Document], worker: _Worker) -> None:
        self.bucket = bucket
        self.send_to(worker)

    def send_to(self, worker: _Worker) -> None:
        self.worker, self.result, self.finished = worker, worker.actor.records.remote(self.bucket), False
        worker.held += 1

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.worker.held -= 1


class _Pool:
    """Up to `size` TaskWorker actors, started only as buckets need them (a one-document run starts one)."""

    def __init__(self, start: Callable[[], Any], size: int) -> None:
        self.start, self.size = start, size
        self.workers: list[_Worker] = []
        self.unanswered_deaths = 0  # workers in a row that died before giving any result

    def with_room(self) -> _Worker | None:
        """The worker to send the next bucket to: the least busy, or a new one while every worker has work and the
        pool is not full; None when every worker already holds BUCKETS_PER_WORKER buckets."""
        worker = min(self.workers, key=lambda w: w.held, default=None)
        if (worker is None or worker.held > 0) and len(self.workers) < self.size:
            worker = _Worker(self.start())
            self.workers.append(worker)
        return worker if worker is not None and worker.held < BUCKETS_PER_WORKER else None

    def any(self) -> _Worker:
        """A worker for a bucket that must go now (one a dead worker held): the one with room, else the least busy."""
        return self.with_room() or min(self.workers, key=lambda w: w.held)

    def drop(self, worker: _Worker) -> None:
        """Let a dead worker go; the next bucket that needs room starts another."""
        import ray

        if worker in self.workers:
            self.workers.remove(worker)
            ray.kill(worker.actor)

    def stop(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker.actor)
        self.workers.clear()


@contextmanager
def ray_engine(make_task: Callable[[], RecordMaker], model_name: str, settings: RaySettings) -> Iterator[Engine]:
    """Connect to Ray (or start a local Ray for the run) and yield the engine; Ray is shut down on exit.

    Raises TaskError with one sentence when Ray is not installed or the cluster can't be reached.
    """
    with _native_stderr_to_devnull(), _python_stdout_for_records_only():
        try:
            _connect(settings.address)
            yield RayEngine(make_task, model_name, settings)
        finally:
            # Also after Ctrl-C inside ray.init: a half-started Ray left to the interpreter's exit can crash it.
            if "ray" in sys.modules:
                sys.modules["ray"].shutdown()


@contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Keep Ray's C++ log lines off the terminal, and Python's stderr on it.

    Ray's C++ core writes its error-level lines straight to file descriptor 2 (ray-project/ray#53727 is one of
    them). Ray's log files under its session folder keep every such line. Python's `sys.stderr` (our messages,
    progress, warnings, tracebacks) is moved to a copy of the real stderr first, so only the native writes go to
    /dev/null.
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


class _RecordsOnlyStdout:
    """sys.stdout while Ray runs: the JSONL writer still gets the real file descriptor (`fileno`), but text printed
    to sys.stdout is dropped. Ray's driver prints a worker's death there ("(raylet) A worker died ..."), in the
    middle of the records; the run's error records already say it, and Ray's session logs keep the line."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, text: str) -> int:
        return len(text)

    def __getattr__(self, name: str) -> Any:  # fileno, flush, isatty, encoding...: the real stream's
        return getattr(self._real, name)


@contextmanager
def _python_stdout_for_records_only() -> Iterator[None]:
    real = sys.stdout
    sys.stdout = _RecordsOnlyStdout(real)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = real


class RayEngine:
    """The engine on a pool of TaskWorker actors: buckets go out as workers have room, records come back in input
    order (`__call__` is the engine). Needs a connected Ray (`ray_engine` connects)."""

    def __init__(self, make_task: Callable[[], RecordMaker], model_name: str, settings: RaySettings) -> None:
        import ray

        self.make_task, self.model_name, self.settings = make_task, model_name, settings
        self.actor_class = ray.remote(TaskWorker).options(
            num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker or None
        )
        self.warned: set[str] = set()  # every worker's Task says the same: each warning is printed once

    def start_worker(self) -> Any:
        return self.actor_class.remote(self.make_task, self.settings.batch_size, self.settings.threads, os.getcwd())

    def __call__(self, docs: Iterator[Document]) -> Iterator[Record]:
        pool = _Pool(self.start_worker, _pool_size(self.settings))
        # Buckets sent and not yet taken, in input order. Records go out in that order, so finished buckets wait
        # behind a slow one; their workers go on with new buckets, up to this many in all.
        most = FINISHED_AHEAD * BUCKETS_PER_WORKER * pool.size
        sent: deque[_Sent] = deque()
        try:
            for next_bucket in buckets(docs, bucket_size(self.settings.batch_size)):
                while True:
                    while sent and sent[0].finished:
                        yield from self.receive(sent.popleft(), pool, sent)
                    worker = pool.with_room() if len(sent) < most else None
                    if worker is not None:
                        break
                    if all(s.finished for s in sent):
                        yield from self.receive(sent.popleft(), pool, sent)
                    else:
                        _wait_for_one(sent)
                sent.append(_Sent(next_bucket, worker))
            while sent:
                yield from self.receive(sent.popleft(), pool, sent)
        finally:
            pool.stop()  # at once, not at Ray's shutdown: on a shared cluster the CPUs go back to others

    def receive(self, sent: _Sent, pool: _Pool, later: deque[_Sent]) -> list[Record]:
        """The records of a bucket sent earlier, waiting for them; a dead worker's bucket becomes error records and
        the buckets it held after it go to another worker."""
        import ray

        sent.finish()
        try:
            failure, warnings, records = ray.get(sent.result)
        except ray.exceptions.RayError as exc:  # the worker died, or Ray lost the result: only this bucket fails
            return self._lost(sent, pool, later, exc)
        sent.worker.answered = True
        pool.unanswered_deaths = 0
        if failure:
            raise TaskError(failure)
        for message in warnings:
            if message not in self.warned:
                self.warned.add(message)
                warn(message)
        return records

    def _lost(self, sent: _Sent, pool: _Pool, later: deque[_Sent], exc: Exception) -> list[Record]:
        import ray

        if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed:
            # TaskWorker.__init__ catches what the Task raises, so this is Ray failing to hand it its arguments:
            # typically this package missing on the worker's node.
            cause = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise TaskError(f"the task could not start on a Ray worker ({cause}); {INSTALL_HINT}") from None
        if isinstance(exc, ray.exceptions.RayActorError):
            # An actor runs its calls in order, so this bucket is the one it was running: the buckets it held
            # after it go to another worker.
            pool.drop(sent.worker)
            if not sent.worker.answered:
                pool.unanswered_deaths += 1
                if pool.unanswered_deaths >= DEATHS_BEFORE_STOPPING:
                    raise TaskError(
                        f"{pool.unanswered_deaths} Ray workers in a row stopped before giving any result (the last:"
                        f" {describe(exc)}); a model that does not fit a worker's memory does this."
                    ) from None
            for queued in later:
                if queued.worker is sent.worker and not _succeeded(queued):
                    queued.send_to(pool.any())
        reason = f"the Ray worker running it failed ({describe(exc)})."
        # A document that could not be read keeps its own reason.
        return [error_record(doc, self.model_name, doc.error or reason) for doc in sent.bucket]


def _succeeded(sent: _Sent) -> bool:
    """Whether a bucket finished with its records (not with its worker's death)."""
    import ray

    try:
        return sent.finished and ray.get(sent.result) is not None
    except ray.exceptions.RayError:
        return False


def _wait_for_one(sent: deque[_Sent]) -> None:
    """Block until some bucket still running finishes, and free its worker's place."""
    import ray

    running = [s for s in sent if not s.finished]
    ready, _ = ray.wait([s.result for s in running], num_returns=1)
    for s in running:
        if s.result in ready:
            s.finish()


def _pool_size(settings: RaySettings) -> int:
    """--workers, or as many workers as the cluster's nodes hold; never more than they hold, since a bucket sent
    to a worker that can't be placed would wait forever. TaskError when not one fits (a GPU asked of a cluster
    without one)."""
    import ray

    need = {"CPU": settings.cpus_per_worker, "GPU": settings.gpus_per_worker}

    def workers_in(resources: dict[str, float]) -> int:
        return min(int(resources.get(kind, 0) / amount + 1e-9) for kind, amount in need.items() if amount)

    fits = sum(workers_in(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive", True))
    asked = f"{settings.gpus_per_worker:g} GPU" if settings.gpus_per_worker else f"{settings.cpus_per_worker:g} CPU"
    if fits < 1:
        raise TaskError(f"no node of the Ray cluster has room for a worker of {asked}; ask for less per worker.")
    if settings.workers and settings.workers > fits:
        warn(f"--workers {settings.workers}: the Ray cluster holds {fits} such workers; starting {fits}.")
    # Only what other jobs leave free now (at least one, which waits for room): a worker past it would wait for
    # them to end, and every record behind its bucket with it. Not warned about: the workers of a run that just
    # ended may still be letting go of theirs.
    free = max(1, workers_in(ray.available_resources()))
    return min(settings.workers or fits, fits, free)


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
    sigterm = signal.getsignal(signal.SIGTERM)  # the runner's orderly stop, which ray.init replaces
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
    finally:
        with contextlib.suppress(ValueError, TypeError):  # not the main thread, or a handler set outside Python
            signal.signal(signal.SIGTERM, sigterm)


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
