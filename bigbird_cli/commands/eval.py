"""`bigbird eval summarize|qa|classify`: score a model's outputs against references in the inputs.

Each subcommand is its task command (same options, same Task, same runner) with three options more. It builds
the task command's spec (`summarize.build`, ...) and runs it through `Evaluate.run`: the spec's Task is wrapped so
that every record is scored as soon as it is made (so `-o` records carry their own `reference` and `metrics`), a
document without a reference becomes an error record, and the report (core/eval) is the last line on stdout once
the run is over.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bigbird.eval.metrics import TASKS, TaskMetrics, require_rouge
from bigbird.eval.references import UNKNOWN_MODEL, References, model_of
from bigbird.tasks.documents import Document, Inputs, describe, first_line
from bigbird.tasks.records import RESULT_FIELDS, Record, error_record

from ..console import console, error, warn
from ..errors import EXIT_OK, EXIT_SOME_FAILED, UsageError
from ..jsonl import open_jsonl, output_file, read_records
from ..options import Command, CommonOptions, Group
from ..runner import (
    RecordMaker,
    TaskFactory,
    TaskSpec,
    check_not_an_input,
    checked_inputs,
    default_batch_size,
    run_task,
)
from . import classify, qa, summarize

EVALUATION_PANEL = "Evaluation"

app = typer.Typer(
    name="eval",
    help="Score a model on labelled documents: the task's records with per-document scores, then one JSON report "
    "(the last line on stdout) and a table on stderr.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    cls=Group,
)


@dataclass
class Evaluate:
    """One evaluation run: which task's metrics, where the references are, and where the predictions come from (a
    model, or an earlier run's file)."""

    metrics: TaskMetrics
    field: str
    predictions: Path | None
    plot: Path | None
    options: dict[str, Any]

    @property
    def references(self) -> References:
        return References(self.metrics, self.field)

    def run(self, spec: TaskSpec) -> int:
        """Score the spec's run (or the --predictions file) and print the report; the exit code (0, or 1 when some
        documents failed or could not be scored). What stops it is raised, as a task run's is."""
        common = spec.common
        if spec.unscorable is not None:
            raise UsageError(spec.unscorable)
        if common.dry_run:
            raise UsageError(
                f"eval scores predictions and --dry-run makes none: plan the run with `bigbird {spec.name} --dry-run`"
            )
        if not common.jsonl and not common.dataset and not common.inputs((self.field,)).is_empty():
            # Text and plain files carry no reference: every document would fail, after the model loaded.
            raise UsageError(
                f"eval needs references: give the documents with --jsonl or --dataset, whose {self.field!r} field "
                "holds them"
            )
        if self.predictions is not None:
            return self._score_file(common)
        if common.resume and common.output is not None and common.output.is_file():
            self._check_resumable(spec.name, common.output)
        return self._predict(spec)

    # A model run ------------------------------------------------------------------------------------------------

    def _predict(self, spec: TaskSpec) -> int:
        common = spec.common
        settings: dict[str, Any] = {"reference_field": self.field, **self._run_settings(common), **self.options}

        built: list[RecordMaker] = []  # the Task, where this process built it (on Ray the workers build theirs)

        def make_scored_task(dry_run: bool | None = None) -> ScoredTask:
            built.append(spec.make_task(dry_run))
            return ScoredTask(built[-1], self)

        with tempfile.TemporaryDirectory(prefix="bigbird-eval-") as tmp:
            # Without -o the records still go to stdout, but through a file, so the report can read them back; so
            # do records for a pipe or a device, which can't be read back (and hold none to resume).
            target = output_file(common.output)
            through_tmp = (target is None and not common.resume) or (target is not None and _not_a_file(target))
            output = Path(tmp) / "predictions.jsonl" if through_tmp else common.output
            scored = replace(
                spec,
                common=replace(common, output=output),
                make_task=make_scored_task,
                extra_fields=(*spec.extra_fields, self.field),
                expand=_refusing_unscorable(spec),
            )
            try:
                run_task(scored, output_name=None if output == common.output else str(target or "FILE"))
            except KeyboardInterrupt:  # no report (it would look final), but what the stopped run made is kept
                _delivered(output, through_tmp, target)  # type: ignore[arg-type]
                raise
            records = _delivered(output, through_tmp, target)  # type: ignore[arg-type]
        resolved = _resolved_settings(built[0] if built else None, spec.make_task)
        return self._report(str(common.model), records, settings | resolved, common.quiet)

    @staticmethod
    def _check_resumable(task_name: str, output: Path) -> None:
        """--resume continues eval's own records. Those of a plain task run carry no scores, and would be skipped
        as done and then counted as failed in the report: they are scored with --predictions instead."""
        try:
            unscored = any(
                "error" not in r and "metrics" not in r and not r.get("dry_run") for r in read_records(output)
            )
        except OSError:
            return  # the writer says what is wrong with the file
        if unscored:
            raise UsageError(
                f"-o {output} holds records without scores (of `bigbird {task_name}`?): score them with "
                f"`bigbird eval {task_name} --predictions {output}`, or write eval's records to another file"
            )

    @staticmethod
    def _run_settings(common: CommonOptions) -> dict[str, Any]:
        """The run options that decide what is scored (the others, such as --threads, only change the speed)."""
        given = {"strategy": common.strategy, "dtype": common.dtype, "quantize": common.quantize, "shard": common.shard}
        return {key: getattr(value, "value", value) for key, value in given.items() if value is not None}

    # An earlier run's records ---------------------------------------------------------------------------------

    def _score_file(self, common: CommonOptions) -> int:
        path = self.predictions
        assert path is not None
        if common.inputs((self.field,)).is_empty():
            raise UsageError("--predictions needs the references too: give the inputs the predictions were made from")
        inputs = checked_inputs(common, (self.field,))
        if common.output is not None:
            check_not_an_input(common.output, inputs)
            if common.output.resolve() == path.resolve():
                raise UsageError(f"-o {common.output} is the --predictions file; write the records to another file.")
        references, repeated, predictions, bad_lines = self._read_file(inputs, path)
        _refuse_another_tasks_records(path, predictions, self.metrics.task)
        if repeated:
            warn(f"{repeated} ids are repeated in the inputs; each is scored against its first reference.")
        run_only = {"--shard": common.shard, "--resume": common.resume, "--engine ray": common.engine.value == "ray"}
        ignored = [name for name, given in run_only.items() if given]
        if ignored:
            warn(f"--predictions scores {path} as it is: {', '.join(ignored)} only apply to a model run.")
        labels = self._checkpoint_labels(common)
        if labels is None and self.references.unnamed_class_ids(references.values(), predictions):
            raise UsageError("the references hold class ids: give --model so that they are named by its labels")
        records = []
        for number in bad_lines:  # a line cut off, or not a record: counted as failed, not skipped silently
            doc = Document(f"{path.name}:{number}", str(path))
            records.append(error_record(doc, model_of(predictions[0]), f"line {number} is not a JSON record."))
            error(f"{doc.id}: line {number} is not a JSON record.")
        failed = lambda doc_id, why: error(f"{doc_id}: {why}")  # noqa: E731
        records += self.references.score_file(str(path), predictions, references, labels, failed)
        unmatched = len(set(references) - {str(record.get("id")) for record in predictions})
        if unmatched:
            warn(f"{unmatched} documents of the inputs have no record in {path}; they are not in the report.")
        with open_jsonl(common.output) as writer:
            for record in records:
                writer.write(record)
        model = ", ".join(sorted({str(record["model"]) for record in predictions if record.get("model")}))
        settings = {"reference_field": self.field, "predictions": str(path)}
        return self._report(model or UNKNOWN_MODEL, records, settings, common.quiet)

    def _read_file(self, inputs: Inputs, path: Path) -> tuple[dict[str, Any], int, list[dict[str, Any]], list[int]]:
        """The inputs' references by id (and how many ids repeat), the file's records, and the numbers of its lines
        that are no record."""
        try:
            # Only the ids and references are needed: a document without text still has them.
            references: dict[str, Any] = {}
            repeated = 0
            for doc in inputs.open():  # a repeated id is scored against its first reference, as in a model run
                repeated += doc.id in references
                references.setdefault(doc.id, doc.fields.get(self.field))
            bad_lines: list[int] = []
            predictions = list(read_records(path, bad_lines.append))
        except OSError as exc:
            raise UsageError(f"{path} could not be read: {exc.strerror or exc}") from None
        if not predictions:
            raise UsageError(f"{path} holds no JSONL records to score")
        return references, repeated, predictions, bad_lines

    def _checkpoint_labels(self, common: CommonOptions) -> list[str] | None:
        """classify with --model: the checkpoint's label names, read from its config alone (no weights), so that
        class-id references can be named without running the model."""
        if self.metrics.task != "classify" or common.model is None:
            return None
        from bigbird.models.checkpoints import CONFIG_FILES, CheckpointError, resolve_checkpoint
        from bigbird.models.config import load_config

        try:
            path = resolve_checkpoint(common.model, revision=common.revision, allow_patterns=CONFIG_FILES)
            config = load_config(path)
        except (CheckpointError, OSError, ValueError) as exc:
            raise UsageError(f"{common.model}: its labels can't be read ({first_line(exc)})") from None
        return config.label_names()

    # The report ---------------------------------------------------------------------------------------------------

    def _report(self, model: str, records: list[Record], settings: dict[str, Any], quiet: bool) -> int:
        from bigbird.eval.report import build_report, plot  # numpy: only once there is something to report

        report = build_report(self.metrics, model, records, settings)
        if not quiet:
            print_tables(report)
        with open_jsonl(None) as writer:
            writer.write(report)
        if self.plot is not None:
            try:  # its path was checked before the run; what fails now (a full disk) must not cost the report
                plot(self.metrics, records, self.plot)
            except (OSError, ValueError) as exc:
                raise UsageError(f"--plot {self.plot} could not be written: {first_line(exc)}.") from None
        return EXIT_SOME_FAILED if report["failed"] else EXIT_OK


def _refusing_unscorable(spec: TaskSpec) -> Callable[[Iterator[Document]], Iterator[Document]] | None:
    """The spec's `expand`, with each document eval can't score (`TaskSpec.unscorable_document`) turned into an error
    document first, which `expand` passes on as it is: one error record, the run going on."""
    why, expand = spec.unscorable_document, spec.expand
    if why is None:
        return expand

    def refused_then_expanded(docs: Iterator[Document]) -> Iterator[Document]:
        checked = (doc if doc.error is not None else _refused(doc, why(doc)) for doc in docs)
        return expand(checked) if expand is not None else checked

    return refused_then_expanded


def _refused(doc: Document, reason: str | None) -> Document:
    return doc if reason is None else replace(doc, error=reason)


def _delivered(output: Path, through_tmp: bool, target: Path | None) -> list[Record]:
    """The records a run wrote to `output`; where they went through a temporary file, they are also written where
    the user asked for them (`target`, stdout when None): what a stopped run made, or all of them."""
    records = list(read_records(output))
    if through_tmp:
        with open_jsonl(target) as writer:
            for record in records:
                writer.write(record)
    return records


def _resolved_settings(task: RecordMaker | None, make_task: TaskFactory) -> dict[str, Any]:
    """What the Task resolved from its options and the checkpoint (summarize: the generation settings): read off
    the Task that ran where this process built it, else (on Ray, where the workers built it) off a dry run of the
    same factory. Where this process can't build one (a checkpoint only the workers have), the report goes
    without, and says so."""
    if task is None:
        try:
            task = make_task(dry_run=True)
        except Exception as exc:  # the records are written; only the report's settings are missing
            warn(f"the report lacks the task's resolved settings: {describe(exc)}.")
            return {}
    return {"generation": asdict(task.generation)} if hasattr(task, "generation") else {}


class ScoredTask:
    """A Task whose records are scored against their documents' references; a document without one is an error
    record and never reaches the model."""

    def __init__(self, task: RecordMaker, evaluate: Evaluate) -> None:
        self.task = task
        self.model_name = task.model_name
        self.warnings: list[str] = getattr(task, "warnings", [])
        self.evaluate = evaluate

    def default_batch_size(self) -> int:
        """The scored task's own (see runner.default_batch_size)."""
        return default_batch_size(self.task)

    def __call__(self, docs: list[Document], per_pass: int) -> list[Record]:
        labels = getattr(self.task, "labels", None)
        refs = self.evaluate.references
        raws = [doc.fields.get(refs.field) for doc in docs]
        references = [refs.reference(raw, labels) for raw in raws]
        ready = [doc for doc, reference in zip(docs, references, strict=True) if reference is not None]
        predicted = iter(self.task(ready, per_pass) if ready else [])
        return [
            refs.scored(next(predicted), reference)
            if reference is not None
            else error_record(doc, self.model_name, refs.missing(raw, labels))
            for doc, raw, reference in zip(docs, raws, references, strict=True)
        ]


def print_tables(report: dict[str, Any]) -> None:
    """The report as tables on stderr: metrics with intervals, and the confusion matrix for classify."""
    scored = report["documents"] - report["failed"]
    table = Table(title=f"{report['task']} · {report['model']} · {scored} documents scored, {report['failed']} failed")
    for column in ("metric", "value (%)", "95% interval"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in report["metrics"].items():
        interval = report["intervals"][name]
        table.add_row(
            name,
            "-" if value is None else f"{value:.2f}",
            "-" if interval is None else f"{interval[0]:.2f} – {interval[1]:.2f}",
        )
    console.print(table)
    confusion = report.get("confusion_matrix")
    if confusion and confusion["labels"]:
        matrix = Table(title="confusion matrix (rows: reference, columns: predicted)")
        matrix.add_column("")
        for label in confusion["labels"]:
            matrix.add_column(label, justify="right")
        for label, row in zip(confusion["labels"], confusion["matrix"], strict=True):
            matrix.add_row(label, *map(str, row))
        console.print(matrix)


# The subcommands --------------------------------------------------------------------------------------------------

_SHARED = {f.name for f in fields(CommonOptions)}


def _evaluating(
    task_name: str, build: Callable[..., TaskSpec], field: tuple[str, str, str], doc: str
) -> Callable[..., None]:
    """The eval subcommand of a task command (given its spec builder): its parameters plus the reference field
    (flag, default, help), --predictions and --plot."""
    field_flag, field_default, field_help = field
    metrics = TASKS[task_name]
    extra = {
        "reference_field": (
            Annotated[str, typer.Option(field_flag, help=field_help, rich_help_panel=EVALUATION_PANEL)],
            field_default,
        ),
        "predictions": (
            Annotated[
                Path | None,
                typer.Option(
                    "--predictions",
                    metavar="FILE",
                    help="Score this earlier run's JSONL against the inputs' references instead of running a model.",
                    rich_help_panel=EVALUATION_PANEL,
                    show_default=False,
                ),
            ],
            None,
        ),
        "plot": (
            Annotated[
                Path | None,
                typer.Option(
                    "--plot",
                    metavar="FILE.png",
                    help=f"Draw {metrics.headline} per document, as a distribution and against input length "
                    "(needs matplotlib).",
                    rich_help_panel=EVALUATION_PANEL,
                    show_default=False,
                ),
            ],
            None,
        ),
    }

    def wrapper(**kwargs: Any) -> None:
        field, predictions, plot_path = (kwargs.pop(name) for name in extra)
        # Missing optional packages are found before any model loads.
        if task_name == "summarize":
            require_rouge()
        if plot_path is not None:
            from bigbird.eval.report import require_plot

            require_plot(plot_path)
        spec = build(**kwargs)  # the task command's own checks and Task, as `bigbird TASK` builds them
        options = {name: value for name, value in kwargs.items() if name not in _SHARED and value is not None}
        raise typer.Exit(Evaluate(metrics, field, predictions, plot_path, options).run(spec))

    params = list(inspect.signature(build).parameters.values())
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
        for name, (a, d) in extra.items()
    ]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    wrapper.__doc__ = doc
    return wrapper


app.command("summarize", cls=Command)(
    _evaluating(
        "summarize",
        summarize.build,
        ("--reference-field", "summary", "Reference summary field of JSONL records and dataset rows."),
        """Summarize documents and score the summaries against reference summaries.

        Scores: rouge1, rouge2, rougeL, rougeLsum F-measures (Google's rouge-score, Porter stemmer); rougeLsum
        splits sentences at newlines (the model's `<n>` is one). Same options as `bigbird summarize`.

        **Example:** bigbird eval summarize --dataset ccdv/arxiv-summarization --split test --text-field article
        --reference-field abstract -o predictions.jsonl
        """,
    )
)
app.command("qa", cls=Command)(
    _evaluating(
        "qa",
        qa.build,
        (
            "--answer-field",
            "answers",
            "Gold answers field: a string, a list of aliases, SQuAD's {text: [...]} or TriviaQA's {aliases: [...]}.",
        ),
        """Answer questions and score the answers against gold answers.

        Scores: exact_match and f1 with SQuAD v1.1 normalisation, each the best over the gold answers. Same
        options as `bigbird qa`.

        **Example:** bigbird eval qa --model M --dataset dev.parquet --answer-field answers
        """,
    )
)
app.command("classify", cls=Command)(
    _evaluating(
        "classify",
        classify.build,
        ("--label-field", "label", "Gold label field: a label name, or a class id of the checkpoint's id2label."),
        """Classify documents and score the labels against gold labels.

        Scores: accuracy and macro_f1, and a confusion matrix in the report. Same options as `bigbird classify`.

        **Example:** bigbird eval classify --model M --jsonl test.jsonl --label-field label
        """,
    )
)


def _not_a_file(path: Path) -> bool:
    """A pipe or a device that -o names (not a file, nor a name a file will be made under)."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _refuse_another_tasks_records(path: Path, predictions: list[dict[str, Any]], task: str) -> None:
    """A file of another command's records would be one "no 'answer' field" error per record: say it once."""
    made = [r for r in predictions if "error" not in r]
    if not made or any(RESULT_FIELDS[task] in r for r in made):
        return
    other = next((name for name, field in RESULT_FIELDS.items() if all(field in r for r in made)), None)
    if other is not None:
        raise UsageError(
            f"{path} holds records of `bigbird {other}`, not of `bigbird {task}`: score it with `bigbird eval {other}`"
        )
