"""Running a task command's spec: documents in, records out, for every task.

It owns what every command shares: checking the options, opening the inputs and claiming the output before the
model loads, picking this shard's documents, skipping ids a previous run finished (`--resume`), handing the rest
to an engine (engines/local.py batches them by length and turns failures into error records; engines/ray.py does
the same on Ray), writing records in input order as soon as they are ready, progress on stderr, and the summary.
A task only ever sees a list of readable documents and returns one record per document.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import typer

from bigbird.tasks.documents import Document, Inputs, check_record_fields, piped_stdin
from bigbird.tasks.records import RESULT_FIELDS, Record

from .console import ProgressLog, console, error, info, progress, warn
from .engines.local import Engine, RecordMaker, local_engine, set_threads
from .errors import EXIT_OK, EXIT_SOME_FAILED, Terminated, UsageError
from .jsonl import JsonlWriter, Output, output_file
from .options import CommonOptions


class TaskFactory(Protocol):
    """How a task command builds its Task, in this process or once per Ray worker. `dry_run=True` builds it from the
    checkpoint's config and tokenizer only, for what the Task resolves from its options (eval's report reads the
    generation settings off one, since on Ray the Task that ran lives on the workers)."""

    def __call__(self, dry_run: bool | None = None) -> RecordMaker: ...


@dataclass(frozen=True)
class Shard:
    """The `index`-th (0-based) of `count` deterministic slices, by a hash of the document's id: a document stays
    in its shard when others are added to or removed from the inputs between runs (by position, every document
    after a new one moved, and resumed shards did some twice and lost others), and a repeated id lands in one
    shard, where it is caught."""

    index: int
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """Parse `I/N` (0 <= I < N); ValueError with a one-sentence reason otherwise."""
        try:
            index_text, count_text = spec.split("/")
            index, count = int(index_text), int(count_text)
        except ValueError:
            raise ValueError(f"--shard takes I/N (for example 0/4), not {spec!r}.") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {spec}: I must be between 0 and N-1 (shards are numbered from 0).")
        return cls(index, count)

    def select(self, docs: Iterable[Document]) -> Iterator[Document]:
        return (doc for doc in docs if self.of(doc.id) == self.index)

    def of(self, doc_id: str) -> int:
        """The shard a document id belongs to (the same on every machine and Python: no salted hash())."""
        digest = hashlib.sha256(doc_id.encode("utf-8", errors="surrogatepass")).digest()
        return int.from_bytes(digest[:8], "little") % self.count


@dataclass
class RunStats:
    """What happened, for the summary line and the exit code."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def run(
    engine: Engine,
    docs: Iterable[Document],
    writer: JsonlWriter,
    *,
    shard: Shard | None = None,
    skip_ids: set[str] | frozenset[str] = frozenset(),
    show_progress: bool | ProgressLog = False,
) -> RunStats:
    """Run `engine` over `docs` and write one record per document to `writer`, in input order.

    Shards and done ids are taken out here, before any document reaches the engine, so every engine resumes alike.
    """
    stats = RunStats()
    if shard is not None:
        docs = shard.select(docs)

    def todo() -> Iterator[Document]:
        for doc in docs:
            # A document that arrives failed (a repeated JSONL id whose first holder is done) is reported again:
            # compaction dropped its error record, and skipping it would leave no trace of it in the output.
            if doc.id in skip_ids and doc.error is None:
                stats.skipped += 1
                continue
            yield doc

    def emit(record: Record) -> None:
        # What the record says is said on stderr as it is written: in input order, and the task's own warnings
        # (a question cut) beside the reading's (bytes replaced).
        writer.write(record)
        if record.get("warning"):
            warn(f"{record['id']}: {record['warning']}")
        if "error" in record:
            stats.failed += 1
            error(f"{record['id']}: {record['error']}")
        else:
            stats.ok += 1
        advance()

    # On a terminal the live counter; in a log (stderr no terminal) the plain lines of a ProgressLog.
    advance, stop = show_progress.bind(stats) if isinstance(show_progress, ProgressLog) else progress(show_progress)
    try:
        for record in engine(todo()):
            emit(record)
    finally:
        stop()
    return stats


@dataclass(frozen=True)
class TaskSpec:
    """What a task command built from its options: the task's name, the shared options, how to build its Task
    (`make_task`, called here or once per Ray worker) and the input fields its documents carry besides the text.
    `run_task` runs it; `bigbird eval` runs the same spec with its records scored (commands/eval.py)."""

    name: str
    common: CommonOptions
    make_task: TaskFactory
    extra_fields: tuple[str, ...] = ()
    # The input documents → the units of work (qa: one per question), before resume and shards see their ids.
    expand: Callable[[Iterator[Document]], Iterator[Document]] | None = None
    # Why `bigbird eval` can't score this run (qa's questions asked of every document), or None.
    unscorable: str | None = None
    # Why `bigbird eval` can't score one document (qa: a record asking several questions), or None: that document
    # becomes an error record in eval, before `expand` sees it.
    unscorable_document: Callable[[Document], str | None] | None = None


def runs(build: Callable[..., TaskSpec]) -> Callable[..., None]:
    """The Typer command of a spec builder: the same options, and running the spec ends the command."""

    @functools.wraps(build)
    def command(**options: Any) -> None:
        raise typer.Exit(run_task(build(**options)))

    return command


def run_task(spec: TaskSpec, *, output_name: str | None = None) -> int:
    """Everything a task command does after parsing: check the options, open the inputs and claim the output,
    load the task, run it, and return the exit code: 0, or 1 when some documents failed. What stops the run
    (a usage error, a model that can't be had, Ctrl-C) is raised; bigbird_cli/errors.py says how it exits.

    The inputs are opened (and the first document read) and the output claimed before the model loads, so a
    typo in a path, an empty folder or an unwritable -o is reported in a second, not after loading gigabytes.
    `output_name` is how messages name -o where it is not the user's (eval's records go through a temporary file).
    """
    common = spec.common
    resumed = ResumedRecords(spec.name, common)
    output = Output(common.output, resume=common.resume, check=resumed)
    try:
        with ExitStack() as stack:
            stack.callback(output.close)
            stack.enter_context(sigterm_stops_in_order())
            shard, docs, inputs = _prepare(spec.name, common, output, spec.extra_fields)
            docs = spec.expand(docs) if spec.expand is not None else docs
            resumed.warn_of_other_models()  # the output was read as it was claimed, before the model loads
            engine = _engine(common, spec.make_task, stack, live="-" in inputs.jsonl)
            with output.writer() as writer:
                stats = run(
                    engine,
                    docs,
                    writer,
                    shard=shard,
                    skip_ids=output.done_ids,
                    show_progress=live_progress(common)
                    or log_progress(common, spec.extra_fields, counted=spec.expand is None),
                )
    except KeyboardInterrupt as stop:  # raised again with what the user needs to know: what was kept
        target = output_name or common.output or "FILE"
        terminated = by_sigterm(stop)
        how = "terminated" if terminated else "interrupted"
        if output.as_it_was:  # stopped while the model loaded, or before the first record was done
            said = f"{how} before any record was written; -o {target} is as it was."
        else:
            said = f"{how}; the records written so far are whole: rerun with --resume -o {target} to finish."
        raise (Terminated if terminated else KeyboardInterrupt)(said) from None
    if not common.quiet:
        skipped = f", {stats.skipped} skipped (already done)" if stats.skipped else ""
        info(f"{spec.name}: {stats.ok} done, {stats.failed} failed{skipped}.")
    return stats.exit_code


@contextmanager
def sigterm_stops_in_order() -> Iterator[None]:
    """SIGTERM raises Terminated for the duration, so a killed run stops as Ctrl-C stops it: whole lines, a
    message, its own exit code. Python's default would end the process at once, without a word."""
    _SIGTERM_SEEN.clear()
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals are not ours to handle there
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Set by SIGTERM: Ray turns any exception raised while it waits into a plain KeyboardInterrupt.
_SIGTERM_SEEN = threading.Event()


def by_sigterm(stop: KeyboardInterrupt) -> bool:
    """Whether a stop came from SIGTERM (Ray hands it back as a plain KeyboardInterrupt, hence the flag)."""
    return isinstance(stop, Terminated) or _SIGTERM_SEEN.is_set()


def _terminate(signum: int, frame: object) -> None:
    _SIGTERM_SEEN.set()
    raise Terminated


def _prepare(
    task_name: str, common: CommonOptions, output: Output, extra_fields: tuple[str, ...]
) -> tuple[Shard | None, Iterator[Document], Inputs]:
    """The checks that need no model: options, inputs (opened, first document read), the output claimed."""
    if common.model is None or not str(common.model).strip():
        raise UsageError(f"{task_name} needs a model: give --model or set BIGBIRD_MODEL_{task_name.upper()}.")
    if common.resume and output.path is None:
        raise UsageError("--resume needs -o FILE: it continues the output file of an earlier run.")
    if output.path is None and sys.stdout is None:  # started with stdout closed (`>&-`)
        raise UsageError("stdout is closed; give -o FILE for the records.")
    if common.engine != "ray" and (common.workers or common.cpus_per_worker or common.gpus_per_worker):
        raise UsageError("--workers, --cpus-per-worker and --gpus-per-worker size a Ray pool: add --engine ray.")
    if common.gpus_per_worker and common.device.value != "cuda":
        raise UsageError("--gpus-per-worker gives each Ray worker a GPU: add --device cuda so the model runs on it.")
    try:
        shard = Shard.parse(common.shard) if common.shard else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    inputs = checked_inputs(common, extra_fields)
    if output.path is not None:
        check_not_an_input(output.path, inputs)
    docs = check_record_fields(inputs.open(), required_fields(common, extra_fields))
    first = next(docs, None)
    if first is None:
        raise UsageError("no input: the files and folders given hold no documents (see --glob).")
    output.claim()
    return shard, itertools.chain([first], docs), inputs


def required_fields(common: CommonOptions, extra_fields: tuple[str, ...]) -> list[str]:
    """The record fields a run can't do without: the text, the command's own (question, text pair, reference),
    and an --id-field the user named (the default `id` may be absent: ids then come from the line numbers)."""
    if not (common.jsonl or common.dataset):
        return []
    named_id = [common.id_field] if common.id_field != "id" else []
    return [common.text_field, *extra_fields, *named_id]


def log_progress(common: CommonOptions, extra_fields: tuple[str, ...], *, counted: bool) -> ProgressLog | bool:
    """Plain progress lines on stderr when it is no terminal (a log file, nohup, Slurm, CI), unless --quiet. The
    total is known where counting is cheap: files and --text, read whole, without shards; `counted` is False where
    documents are expanded (qa's several questions)."""
    if common.quiet or console.is_terminal:
        return False
    inputs = common.inputs(extra_fields)
    cheap = counted and not (inputs.is_empty() or inputs.jsonl or inputs.dataset or "-" in inputs.paths or common.shard)
    total = len(inputs.files()) + len(inputs.texts) if cheap else None
    return ProgressLog(total, info)


def live_progress(common: CommonOptions) -> bool:
    """Whether to draw the live progress line on stderr: on a terminal, unless the records go to that terminal
    too (stdout not redirected), where the redrawn line would land inside the JSON lines."""
    if common.quiet or not console.is_terminal:
        return False
    records_on_screen = output_file(common.output) is None
    return not (records_on_screen and sys.stdout is not None and sys.stdout.isatty())


class ResumedRecords:
    """--resume takes the ids in -o as done: this sees each record kept so, as the output is read. Records of another
    command would be kept as this one's (refused); those of another model are kept, and said so once: a checkpoint
    that moved is still the same model."""

    def __init__(self, task_name: str, common: CommonOptions) -> None:
        self.task_name, self.output = task_name, common.output
        self.field, self.model = RESULT_FIELDS.get(task_name), str(common.model)
        self.others: collections.Counter[str] = collections.Counter()

    def __call__(self, record: dict) -> None:
        if self.field is not None and self.field not in record:
            raise UsageError(
                f"-o {self.output} holds records of another command (no {self.field!r} field): write "
                f"{self.task_name}'s records to another file"
            )
        if str(record.get("model")) != self.model:
            self.others[str(record.get("model"))] += 1

    def warn_of_other_models(self) -> None:
        if self.others:
            name, count = self.others.most_common(1)[0]
            warn(
                f"{sum(self.others.values())} records in -o {self.output} were made by another model than "
                f"{self.model} ({name!r} made {count}); --resume keeps them as done."
            )


def checked_inputs(common: CommonOptions, extra_fields: tuple[str, ...]) -> Inputs:
    """The inputs the options name, refused when there are none or none of them exists (a usage error); each
    missing one is warned about here and gets an error record when read."""
    inputs = common.inputs(extra_fields)
    if inputs.is_empty():
        inputs = stdin_when_piped(inputs)
    for pattern in inputs.globs:
        if Path(pattern).is_absolute():
            raise UsageError(f"--glob takes file names relative to the folders given (such as '*.txt'), not {pattern}.")
    missing = inputs.missing()
    if missing and len(missing) == len(inputs.paths) + len(inputs.jsonl) and not (inputs.texts or inputs.dataset):
        raise UsageError(f"{missing[0]} does not exist." if len(missing) == 1 else "none of the inputs exist.")
    for name in missing:
        warn(f"{name} does not exist; it gets an error record.")
    inputs.check()
    for note in inputs.notes():
        warn(note)
    return inputs


def stdin_when_piped(inputs: Inputs) -> Inputs:
    """No input named: stdin when it is a pipe or a file with data (as `-`), else the usage error."""
    piped = piped_stdin()
    if not piped:
        empty = " (stdin is empty)" if piped is False else ""
        raise UsageError(f"no input: give files or folders, - for stdin, --text, --jsonl or --dataset{empty}.")
    return dataclasses.replace(inputs, paths=["-"])


def check_not_an_input(path: Path, inputs: Inputs) -> None:
    """Refuse `-o` naming a file the run reads: opening it for writing would empty it before it is read, and
    stdin redirected from it would read the run's own records back without end."""
    target = path.resolve()
    # A hard link is the same file under another name: resolve() can't tell, the inode can.
    read = [file.resolve() == target or _same_inode(file, path) for file in inputs.files()]
    if "-" in [*inputs.paths, *inputs.jsonl] and _is_stdin(target):
        raise UsageError(f"-o {path} is the file stdin reads from; write the records to another file.")
    # A new file inside an input folder would be picked up as a document once the run has created it.
    folders = [Path(p).resolve() for p in inputs.paths if p != "-" and Path(p).is_dir()]
    inside = any(target.is_relative_to(folder) and any(target.match(g) for g in inputs.globs) for folder in folders)
    if any(read) or inside:
        raise UsageError(f"-o {path} is also an input; write the records to another file.")


def _same_inode(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one missing (-o not written yet)
        return False


def _is_stdin(path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(0), os.stat(path))
    except OSError:  # stdin closed, or no such file yet
        return False


def _engine(
    common: CommonOptions, make_task: Callable[[], RecordMaker], stack: ExitStack, live: bool = False
) -> Engine:
    """The engine --engine asks for. The local one loads the task here; Ray's connects (or starts a local Ray,
    shut down when `stack` closes) and loads the task once per worker. Raises TaskError with one sentence.

    `live`: the documents arrive as another program writes them (JSONL records on stdin), so without --batch-size
    each is done as soon as it is read: a task's larger default batch reads that many times 8 documents ahead
    (`engines.local.bucket_size`) before its first record."""
    if common.engine == "ray":
        from .engines.ray import RaySettings, ray_engine

        settings = RaySettings.from_options(common)
        return stack.enter_context(ray_engine(make_task, str(common.model), settings))
    set_threads(common.threads)
    task = make_task()
    for message in getattr(task, "warnings", []):
        warn(message)
    return local_engine(task, common.batch_size or (1 if live else default_batch_size(task)))


def default_batch_size(task: RecordMaker) -> int:
    """The batch size a task runs when --batch-size is not given: its own default, else 1."""
    own = getattr(task, "default_batch_size", None)
    return own() if own is not None else 1
