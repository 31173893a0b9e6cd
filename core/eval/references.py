"""Reading references and scoring records against them, for a model run or an earlier run's file.

A reference is whatever the input's reference field holds; `References` turns it into what the task's scorer takes,
names a class id by the model's labels (an integer, a whole float such as a parquet column with a gap holds, or
digits as text, since CSV columns are read as text), and says in one sentence why a document can't be scored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bigbird.tasks.documents import Document
from bigbird.tasks.records import Record, error_record

from .metrics import TaskMetrics


@dataclass(frozen=True)
class References:
    """One task's references: its metrics, and the input field the references are read from."""

    metrics: TaskMetrics
    field: str

    def reference(self, raw: Any, labels: list[str] | None = None) -> Any:
        """The reference in the form the scorer takes, or None when the document has none usable (`missing` says
        why). Where the model's labels are known, a class id is named by them."""
        if labels:
            number = class_id(raw, labels)
            if number is not None:
                raw = labels[number] if 0 <= number < len(labels) else None
        reference = self.metrics.reference(raw)
        if labels and self.metrics.task == "classify" and reference not in labels:
            return None  # a name the model never predicts (a typo, another dataset's labels): `missing` says so
        return reference

    def missing(self, raw: Any = None, labels: list[str] | None = None) -> str:
        """Why a document's reference can't be scored against (`raw` as the document holds it)."""
        number = class_id(raw, labels) if labels else None
        if number is not None and labels and not 0 <= number < len(labels):
            return f"the reference {raw!r} is no class id of the model, whose labels are 0 to {len(labels) - 1}."
        refusal = self.metrics.refusal(raw)
        if refusal is not None:
            return refusal
        named = self.metrics.reference(raw)
        if labels and self.metrics.task == "classify" and named is not None and named not in labels:
            shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
            return f"the reference {named!r} is no label of the model, whose labels are {shown}."
        if raw is None or raw in ("", [], {}) or (isinstance(raw, str) and not raw.strip()):
            return f"no reference to score against: the {self.field!r} field is missing or empty."
        shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
        return f"the {self.field!r} field holds {shown}, which is no {self.metrics.reference_kind}."

    def scored(self, record: Record, reference: Any) -> Record:
        """The record with its reference and its per-document metrics (an error record stays as it is)."""
        if "error" in record:
            return record
        field = self.metrics.prediction_field
        if field not in record:
            return {**record, "error": f"the record has no {field!r} field to score."}
        if not isinstance(record[field], str):
            return {**record, "error": f"the record's {field!r} is {record[field]!r}, not a text to score."}
        scores = self.metrics.score(record[self.metrics.prediction_field], reference)
        return {**record, "reference": reference, "metrics": scores}

    def unnamed_class_ids(self, references: Iterable[Any], predictions: list[dict[str, Any]]) -> bool:
        """Whether classify references hold class ids that only the model's labels could name: numbers, or digits
        as text (a CSV column) unless the predictions use the same digits as label names."""
        named = sorted({str(p.get(self.metrics.prediction_field)) for p in predictions})
        return self.metrics.task == "classify" and any(
            is_class_id(r) or class_id(r, named) is not None for r in references
        )

    def score_file(
        self,
        source: str,
        predictions: list[dict[str, Any]],
        references: dict[str, Any],
        labels: list[str] | None,
        failed: Callable[[str, str], None],
    ) -> list[Record]:
        """An earlier run's records (`predictions`, read from the file named `source`) scored against the inputs'
        references by id. A repeated id's later records and a record without a reference become error records;
        `failed` hears each one made here (id, reason). The run's own error records are kept as they are."""
        records = []
        seen: set[str] = set()
        for prediction in predictions:
            doc_id = str(prediction.get("id"))
            if doc_id in seen:  # as a repeated id of the inputs is: an error record, not a second score
                doc = Document(doc_id, str(prediction.get("source", source)))
                why = f"the id is repeated in {source}: only its first record is scored."
                records.append(error_record(doc, model_of(prediction), why))
                failed(doc.id, why)
                continue
            seen.add(doc_id)
            if "error" in prediction:
                records.append(prediction)
                continue
            reference = self.reference(references.get(doc_id), labels)
            if reference is None:
                doc = Document(doc_id, str(prediction.get("source", source)))
                why = "no input document has this id to give a reference."
                if doc_id in references:
                    why = self.missing(references[doc_id], labels)
                record = error_record(doc, model_of(prediction), why)
            else:
                record = self.scored(prediction, reference)
            if "error" in record:
                failed(doc_id, record["error"])
            records.append(record)
        return records


UNKNOWN_MODEL = "unknown"  # the model of a record that names none (the report says the same)


def model_of(record: dict[str, Any]) -> str:
    """The model a record names, as a string: `UNKNOWN_MODEL` when it names none (str() of a missing one said
    "None")."""
    model = record.get("model")
    return UNKNOWN_MODEL if model is None or model == "" else str(model)


def is_class_id(reference: Any) -> bool:
    """Whether a reference is a number, which only the model's labels can name."""
    if isinstance(reference, float):
        return reference.is_integer()
    return isinstance(reference, int) and not isinstance(reference, bool)


def class_id(reference: Any, labels: list[str]) -> int | None:
    """The class id a reference stands for, or None where it is a label name (or nothing usable)."""
    if is_class_id(reference):
        number = int(reference)
        return None if not 0 <= number < len(labels) and str(reference) in labels else number
    text = reference.strip() if isinstance(reference, str) else None
    if text is not None and text not in labels and re.fullmatch(r"[+-]?\d+(\.0*)?", text):  # "1", or "1.0" (pandas)
        return int(float(text))
    return None
