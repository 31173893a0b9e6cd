"""Training examples from the task commands' inputs, cut into the windows inference reads.

A fine-tuned model is only as good as the match between what it trained on and what it is later shown, so the
examples are made by the inference Task itself (`split`, `wrap`): a classify document becomes one example per
chunk (its label on each, as inference averages the chunks), a qa document one per sliding window beside its
question (the answer's tokens where the window holds the answer, [CLS] where it doesn't), a summarize document
its first window with the reference as target.

The label set comes from the training data: a list makes the task multi-label, numbers that are not all whole
make it regression, anything else (names, whole-number class ids) single-label classification. A classifier's
documents may also come from folders, one subfolder per label (`train/positive/a.txt` is a `positive` document).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bigbird.tasks.base import DocumentError, Task
from bigbird.tasks.documents import Document

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"


class TrainingError(Exception):
    """Training can't start or go on (no usable example, a checkpoint that doesn't fit): one sentence."""


@dataclass
class Example:
    """One model input: framed token ids and what the head learns from them.

    `target`: a class id (single-label), a 0/1 vector (multi-label), a number (regression), (start, end) token
    positions (qa) or the reference's token ids (summarize). `question_length`: qa's first context position.
    """

    input_ids: list[int]
    target: Any
    question_length: int = 0


@dataclass
class Skipped:
    """Documents left out of training or of the dev set, by reason (reported at the start, never a crash)."""

    reasons: Counter = field(default_factory=Counter)

    def add(self, reason: str) -> None:
        self.reasons[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def describe(self) -> str:
        return "; ".join(f"{count} {reason}" for reason, count in self.reasons.most_common())


# Labels ------------------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def has_label(value: Any) -> bool:
    return value is not None and value != "" and value != [] and not (isinstance(value, str) and not value.strip())


def label_name(value: Any) -> str:
    """A label as the config names it: whole numbers (class ids, 1.0 from a column with gaps) as their digits."""
    if _is_number(value) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass
class LabelSet:
    """The labels a classifier learns, and how its config says so (`problem_type`, `id2label`)."""

    problem_type: str
    names: list[str]

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> LabelSet:
        values = [v for v in values if has_label(v)]
        if not values:
            raise TrainingError("no training document has a label: check --label-field.")
        if any(isinstance(v, list) for v in values):
            names = {label_name(x) for v in values for x in (v if isinstance(v, list) else [v]) if has_label(x)}
            return cls(MULTI, _sorted_names(names))
        if all(_is_number(v) for v in values) and not all(float(v).is_integer() for v in values):
            return cls(REGRESSION, ["score"])
        return cls(SINGLE, _sorted_names({label_name(v) for v in values}))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def target(self, value: Any) -> Any:
        """The head's target for a record's label; KeyError naming a label outside the set, ValueError for a value
        of the wrong kind."""
        if self.problem_type == REGRESSION:
            if not _is_number(value):
                raise ValueError(f"{value!r} is not a number")
            return float(value)
        index = {name: i for i, name in enumerate(self.names)}
        if self.problem_type == MULTI:
            hot = [0.0] * len(self.names)
            for item in value if isinstance(value, list) else [value]:
                hot[index[label_name(item)]] = 1.0
            return hot
        if isinstance(value, (list, dict)):
            raise ValueError(f"{value!r} is not one label")
        return index[label_name(value)]


def _sorted_names(names: set[str]) -> list[str]:
    """Class ids in numeric order (so that id i is named "i"), names alphabetically."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def label_folders(docs: Iterable[Document], folders: Sequence[str], label_field: str) -> Iterator[Document]:
    """The documents, those read from under one of `folders` labelled with the name of the folder holding them.

    What a user who sorted files into `train/positive/` and `train/negative/` means; the label is the folder
    directly holding the file, relative to the folder given, so a file directly in a given folder (or a file
    given on its own) has none, and is counted as unusable like a record without a label."""
    roots = [Path(f) for f in folders if Path(f).is_dir()]
    for doc in docs:
        if doc.keys is None and label_field not in doc.fields:  # a file (a record's fields are its own)
            label = _folder_label(Path(doc.source), roots)
            if label is not None:
                doc.fields[label_field] = label
        yield doc


def _folder_label(path: Path, roots: Sequence[Path]) -> str | None:
    for root in roots:
        if path.is_relative_to(root) and len(path.relative_to(root).parts) > 1:
            return path.parent.name
    return None


def missing_label(doc: Document, field_name: str) -> str:
    """Why a document has no label, as the count of left-out documents says it."""
    return "without a label folder" if doc.keys is None else f"without a {field_name!r}"


# Examples ----------------------------------------------------------------------------------------------------


@dataclass
class Fields:
    """Where a record keeps what training needs, as the eval commands name the fields."""

    label: str = "label"
    answer: str = "answers"
    reference: str = "summary"


def classify_examples(
    task: Task, docs: Sequence[Document], labels: LabelSet, fields: Fields, skipped: Skipped
) -> tuple[list[Example], list[int]]:
    """One example per window the classify task reads, each with its document's label; and which document each
    example came from."""
    examples, owners = [], []
    for i, doc in enumerate(docs):
        target = _target_or_skip(doc, labels, fields.label, skipped)
        if target is None:
            continue
        chunked = _split_or_skip(task, doc, skipped)
        if chunked is None:
            continue
        for s, e in chunked.windows:
            examples.append(Example(task.wrap(chunked.ids[s:e], chunked.pair), target))
            owners.append(i)
    return examples, owners


def _split_or_skip(task: Any, doc: Document, skipped: Skipped) -> Any:
    """The document cut into the windows inference reads (`Task.split`), or None, counted, where it can't be."""
    try:
        return task.split(doc)
    except DocumentError as exc:
        skipped.add(f"unusable ({exc})")
        return None


def _target_or_skip(doc: Document, labels: LabelSet, field_name: str, skipped: Skipped) -> Any:
    if doc.error:
        skipped.add("unreadable")
        return None
    value = doc.fields.get(field_name)
    if not has_label(value):
        skipped.add(missing_label(doc, field_name))
        return None
    try:
        return labels.target(value)
    except KeyError:
        skipped.add("with a label outside the training set's")
    except ValueError:
        skipped.add(f"whose {field_name!r} is no {labels.problem_type.replace('_', ' ')} label")
    return None


def answer_spans(doc: Document, answer_field: str) -> list[tuple[int, int]] | None:
    """The answer's character spans in the document ([] for "no answer"), None when the record has no answer field.

    Takes SQuAD's {"text": [...], "answer_start": [...]}, a list of texts or one text; without a start, an
    answer is found where it first occurs in the text (not found: no span)."""
    if answer_field not in doc.fields or doc.fields[answer_field] is None:
        return None
    value = doc.fields[answer_field]
    starts: list[Any] = []
    if isinstance(value, dict):
        texts = value.get("text", value.get("aliases", []))
        starts = list(value.get("answer_start", []) or [])
    else:
        texts = value
    texts = [texts] if isinstance(texts, str) else [t for t in texts if isinstance(t, str)]
    spans = []
    for k, text in enumerate(texts):
        if not text.strip():
            continue
        start = int(starts[k]) if k < len(starts) and _is_number(starts[k]) else doc.text.find(text)
        if start >= 0 and doc.text[start : start + len(text)] == text:
            spans.append((start, start + len(text)))
    return spans


def qa_examples(
    task: Any, docs: Sequence[Document], fields: Fields, skipped: Skipped
) -> tuple[list[Example], list[int]]:
    """One example per window the qa task reads: the first answer's tokens where the window holds them whole,
    else the [CLS] null span (position 0), as the reference's training scripts do."""
    examples, owners = [], []
    for i, doc in enumerate(docs):
        if doc.error:
            skipped.add("unreadable")
            continue
        spans = answer_spans(doc, fields.answer)
        if spans is None:
            skipped.add(f"without an {fields.answer!r}")
            continue
        if doc.fields.get(fields.answer) and not spans:
            skipped.add("whose answer is not in the text")
            continue
        chunked = _split_or_skip(task, doc, skipped)
        if chunked is None:
            continue
        question = chunked.question
        tokens = _token_span(chunked.offsets, spans[0]) if spans else None
        first = task._context_start(question.ids)
        for s, e in chunked.windows:
            start = end = 0
            if tokens is not None and s <= tokens[0] and tokens[1] < e:
                start, end = first + tokens[0] - s, first + tokens[1] - s
            ids = task.wrap(question.ids, chunked.ids[s:e].tolist())
            examples.append(Example(ids, (start, end), question_length=first))
            owners.append(i)
    return examples, owners


def _token_span(offsets: Any, span: tuple[int, int]) -> tuple[int, int] | None:
    """The first and last token overlapping the characters [start, end)."""
    inside = [k for k, (a, b) in enumerate(offsets.tolist()) if a < span[1] and b > span[0]]
    return (inside[0], inside[-1]) if inside else None


def summarize_examples(
    task: Any, docs: Sequence[Document], fields: Fields, max_target: int, skipped: Skipped
) -> tuple[list[Example], list[int]]:
    """The document's first window as input and its reference as target (a chunked document's later windows are
    summarized from summaries at inference, which no reference describes)."""
    examples, owners = [], []
    for i, doc in enumerate(docs):
        if doc.error:
            skipped.add("unreadable")
            continue
        reference = doc.fields.get(fields.reference)
        if not isinstance(reference, str) or not reference.strip():
            skipped.add(f"without a {fields.reference!r} text")
            continue
        chunked = _split_or_skip(task, doc, skipped)
        if chunked is None:
            continue
        ids = chunked.ids
        s, e = chunked.windows[0]
        target = task.wrap(task.encode(reference).ids[: max_target - task.num_special].tolist())
        examples.append(Example(task.wrap(ids[s:e].tolist()), target))
        owners.append(i)
    return examples, owners


# Batches ------------------------------------------------------------------------------------------------------


def collate(examples: Sequence[Example], kind: str, problem_type: str | None, pad_id: int) -> dict[str, torch.Tensor]:
    """The keyword arguments of one forward pass with labels: inputs padded to the longest, targets stacked."""
    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        ids[row, : len(ex.input_ids)] = torch.as_tensor(ex.input_ids)
        mask[row, : len(ex.input_ids)] = 1
    batch: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    if kind == "classify":
        dtype = torch.long if problem_type == SINGLE else torch.float32
        batch["labels"] = torch.tensor([ex.target for ex in examples], dtype=dtype)
    elif kind == "qa":
        batch["start_positions"] = torch.tensor([ex.target[0] for ex in examples])
        batch["end_positions"] = torch.tensor([ex.target[1] for ex in examples])
        batch["question_lengths"] = torch.tensor([ex.question_length for ex in examples])
    else:
        longest = max(len(ex.target) for ex in examples)
        labels = torch.full((len(examples), longest), -100, dtype=torch.long)
        for row, ex in enumerate(examples):
            labels[row, : len(ex.target)] = torch.as_tensor(ex.target)
        batch["labels"] = labels
    return batch
