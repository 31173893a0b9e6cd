"""Dev-set scores during training: the inference Task's records, scored with `bigbird eval`'s metrics.

The model being trained is handed to the same Task that `bigbird classify|qa|summarize --model OUT_DIR` will
build, so the score is the one the saved model gets from the command (the same windows, chunk averaging, span
search and generation settings). Single-label classification reports accuracy and macro F1; multi-label the
share of documents whose predicted label set (scores over 0.5) is exactly right; regression the mean squared
error (lower is better); qa SQuAD's exact match and F1; summarize ROUGE-1/2/L.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bigbird.eval.metrics import TASKS as METRICS
from bigbird.eval.metrics import EvalError, gold_answers, macro_f1, require_rouge
from bigbird.tasks.documents import Document

from .data import MULTI, REGRESSION, Skipped, TrainingError, has_label, label_name, missing_label

# loop.Trainer: loop imports this module, so naming it here would make an import circle.
Trainer = Any

# Dev documents scored per forward pass.
DEV_BATCH = 8


@dataclass
class DevSet:
    docs: list[Document]
    references: list[Any]
    headline: str
    lower_is_better: bool = False
    skipped: Skipped = field(default_factory=Skipped)

    @property
    def size(self) -> int:
        return len(self.docs)

    @classmethod
    def build(cls, trainer: Trainer, docs: list[Document]) -> DevSet:
        """The dev documents that can be scored; the others are counted by reason."""
        s = trainer.settings
        skipped = Skipped()
        kept, references = [], []
        for doc in docs:
            if doc.error:
                skipped.add("unreadable")
                continue
            reference = _reference(trainer, doc, skipped)
            if reference is not None:
                kept.append(doc)
                references.append(reference)
        if s.task == "summarize":
            try:
                require_rouge()
            except EvalError as exc:
                raise TrainingError(str(exc)) from None
        problem = trainer.labels.problem_type if trainer.labels else None
        headline = "mse" if problem == REGRESSION else METRICS[s.task].headline
        return cls(kept, references, headline, lower_is_better=problem == REGRESSION, skipped=skipped)

    def score(self, trainer: Trainer) -> dict[str, float]:
        """Mean scores over the dev documents with the model as it is now (the caller sets eval mode)."""
        task = trainer.task
        task.model, task.dry_run = trainer.model, False
        if hasattr(task, "head_takes_question_lengths"):
            task.head_takes_question_lengths = trainer.takes_question_lengths
        records = []
        for start in range(0, len(self.docs), DEV_BATCH):
            records += task(self.docs[start : start + DEV_BATCH], DEV_BATCH)
        task.model, task.dry_run = None, True
        if not self.docs:
            return {self.headline: float("nan")}
        return _scores(trainer, records, self.references)


def _reference(trainer: Trainer, doc: Document, skipped: Skipped) -> Any:
    s = trainer.settings
    if s.task == "classify":
        value = doc.fields.get(s.fields.label)
        if not has_label(value):
            skipped.add(missing_label(doc, s.fields.label))
            return None
        try:
            target = trainer.labels.target(value)
        except (KeyError, ValueError):
            skipped.add("with a label the training set doesn't have")
            return None
        if trainer.labels.problem_type == MULTI:
            return {name for name, hot in zip(trainer.labels.names, target, strict=True) if hot}
        return target if trainer.labels.problem_type == REGRESSION else label_name(value)
    if s.task == "qa":
        value = doc.fields.get(s.fields.answer)
        if value is None:
            skipped.add(f"without an {s.fields.answer!r}")
            return None
        return gold_answers(value) or None
    value = doc.fields.get(s.fields.reference)
    if not isinstance(value, str) or not value.strip():
        skipped.add(f"without a {s.fields.reference!r} text")
        return None
    return value


def _scores(trainer: Trainer, records: list[dict[str, Any]], references: list[Any]) -> dict[str, float]:
    s = trainer.settings
    metrics = METRICS[s.task]
    if s.task == "classify" and trainer.labels.problem_type == REGRESSION:
        pairs = zip(records, references, strict=True)
        errors = [(r["score"] - ref) ** 2 if "error" not in r else float("inf") for r, ref in pairs]
        return {"mse": sum(errors) / len(errors)}
    if s.task == "classify" and trainer.labels.problem_type == MULTI:
        hits = [
            "error" not in r and {name for name, p in r["scores"].items() if p > 0.5} == ref
            for r, ref in zip(records, references, strict=True)
        ]
        return {"accuracy": 100.0 * sum(hits) / len(hits)}
    totals: dict[str, float] = dict.fromkeys(metrics.per_document, 0.0)
    predictions = []
    for record, reference in zip(records, references, strict=True):
        prediction = record.get(metrics.prediction_field, "") if "error" not in record else ""
        predictions.append(prediction)
        scores = metrics.score(prediction, reference)
        for name in totals:
            totals[name] += scores[name]
    result = {name: value / len(records) for name, value in totals.items()}
    if s.task == "classify":
        result["macro_f1"] = macro_f1(references, predictions)
    return result
