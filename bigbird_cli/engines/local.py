"""The engine-neutral loop: documents in, records out, in input order, on this process.

Documents are read ahead in buckets (a few batches' worth), each bucket sorted by length into batches so that
batch-mates pad little; a batch that raises is retried one document at a time, so only the bad document fails.
A task that keeps its own batch full (summarize's continuous batching, `Task.streams`) gets the whole bucket in
one call instead, and its records are written as they are done.
The Ray engine (engines/ray.py) runs the same `bucket_records` on each of its workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from bigbird.tasks.documents import Document, describe
from bigbird.tasks.records import Record, error_record

# Documents read ahead of the model when --batch-size > 1, as a multiple of the batch size: enough to form
# batches of similar lengths, few enough that records still stream out steadily.
BUCKET_BATCHES = 8

# An engine turns documents into records, one per document, in input order, reading the documents as it goes.
# `local_engine` is the loop below on this machine; `--engine ray` swaps in engines/ray.py's `RayEngine`, which
# runs the same buckets on Ray actors.
Engine = Callable[[Iterator[Document]], Iterator[Record]]


class RecordMaker(Protocol):
    """What the loop needs from a task (a bigbird.tasks Task, or a wrapper around one such as eval's): a model
    label for records, and documents → records, running at most `per_pass` input windows a forward pass (the
    runner's --batch-size: one long document's chunks batch up to it)."""

    model_name: str

    def __call__(self, docs: list[Document], per_pass: int) -> list[Record]: ...

    # A task whose `streams` is true also has `stream(docs, per_pass)`: (index, record) pairs as records are done
    # (bigbird.tasks.base.Task.stream), and is handed whole buckets.


def bucket_size(batch_size: int) -> int:
    """Documents read ahead of the model: one at a time unbatched, else enough to bucket by length."""
    return 1 if batch_size <= 1 else batch_size * BUCKET_BATCHES


def local_engine(task: RecordMaker, batch_size: int = 1) -> Engine:
    """The task on this machine: read-ahead buckets, each in batches of similar length."""

    def records(docs: Iterator[Document]) -> Iterator[Record]:
        for bucket in buckets(docs, bucket_size(batch_size)):
            yield from bucket_records(task, bucket, batch_size)

    return records


def buckets(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    """The documents in read-ahead buckets of `size`, each read only when the one before it is taken."""
    bucket: list[Document] = []
    for doc in docs:
        bucket.append(doc)
        if len(bucket) >= size:
            yield bucket
            bucket = []
    if bucket:
        yield bucket


def bucket_records(task: RecordMaker, bucket: list[Document], batch_size: int) -> Iterator[Record]:
    """Records for one read-ahead bucket, in its order, each yielded as soon as it and those before it are ready:
    unreadable documents become error records, readable ones run in batches sorted by length.

    A batch that raises is retried one document at a time, so an exception caused by one document becomes that
    document's error record and its batch-mates still get results.
    """
    records: list[Record | None] = [None] * len(bucket)
    written = 0

    def ready() -> Iterator[Record]:
        nonlocal written
        while written < len(bucket) and records[written] is not None:
            yield records[written]  # type: ignore[misc]
            written += 1

    for i, doc in enumerate(bucket):
        if doc.error is not None:
            records[i] = error_record(doc, task.model_name, doc.error)
    yield from ready()
    if getattr(task, "streams", False):  # the task keeps its batch full across the whole bucket itself
        readable = [i for i, doc in enumerate(bucket) if doc.error is None]
        try:
            for j, record in task.stream([bucket[i] for i in readable], batch_size):  # type: ignore[attr-defined]
                records[readable[j]] = record
                yield from ready()
        except Exception:  # as a failed batch: the documents without a record are retried one at a time
            for i in readable:
                if records[i] is None:
                    [records[i]] = _process(task, [bucket[i]], batch_size)
                    yield from ready()
        return
    readable = sorted((i for i, doc in enumerate(bucket) if doc.error is None), key=lambda i: len(bucket[i].text))
    for start in range(0, len(readable), batch_size):
        batch = readable[start : start + batch_size]
        for i, record in zip(batch, _process(task, [bucket[i] for i in batch], batch_size), strict=True):
            records[i] = record
        yield from ready()


def _process(task: RecordMaker, batch: list[Document], per_pass: int) -> list[Record]:
    try:
        records = task(batch, per_pass)
        if len(records) != len(batch):
            raise RuntimeError(f"the task returned {len(records)} records for {len(batch)} documents")
        return records
    except Exception as exc:  # any failure must become error records, not end the run
        if len(batch) > 1:
            return [record for doc in batch for record in _process(task, [doc], per_pass)]
        return [error_record(batch[0], task.model_name, _reason(exc))]


def _reason(exc: Exception) -> str:
    """One sentence for an unexpected exception: its type and first line."""
    text = describe(exc)
    return text + "." if text == type(exc).__name__ else f"{type(exc).__name__}: {text}."


def set_threads(threads: int | None) -> None:
    """--threads for this process's torch (the driver's, or a Ray worker's); None leaves torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)
