"""Per-document scores and corpus metrics for `bigbird eval`, as percentages (0-100).

summarize: ROUGE F-measures from Google's `rouge-score` (the implementation the paper's numbers come from), with
the Porter stemmer; ROUGE-Lsum reads sentences from newlines, and the Pegasus models write a newline as `<n>`.
qa: SQuAD v1.1 exact match and token F1, best over the gold answers.
classify: accuracy per document; macro F1 and the confusion matrix over the corpus.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from bigbird.tasks.records import RESULT_FIELDS

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class EvalError(Exception):
    """Evaluation can't run (a missing optional package); the message is one sentence."""


# summarize ----------------------------------------------------------------------------------------------------


@cache
def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise EvalError("eval summarize needs Google's rouge-score: pip install 'bigbird-cli[eval]'.") from None
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def require_rouge() -> None:
    """Fail early (before any model loads) when rouge-score is not installed."""
    _rouge_scorer()


def with_newlines(text: str) -> str:
    """Pegasus checkpoints write a line break as the token `<n>`: make it the newline ROUGE-Lsum splits on."""
    return text.replace("<n>", "\n")


@cache
def _rouge_tokenizer() -> Any:
    _rouge_scorer()  # the install hint where rouge-score is missing
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=False)


def _rouge_reference(reference: Any) -> str | None:
    """A summary's reference, where ROUGE can count its words: rouge-score keeps only the letters a-z and the digits
    (CJK, Cyrillic or Greek text has no word left, and every summary would score 0 against it)."""
    text = _text(reference)
    return text if text is not None and _rouge_tokenizer().tokenize(with_newlines(text)) else None


def _rouge_refusal(reference: Any) -> str | None:
    if _text(reference) is None or _rouge_reference(reference) is not None:
        return None
    return (
        "the reference has no word ROUGE can count: rouge-score keeps only the letters a-z and the digits "
        "0-9, so a summary would score 0 against it."
    )


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F-measures of one summary against its reference."""
    scores = _rouge_scorer().score(with_newlines(reference), with_newlines(prediction))
    return {name: 100.0 * scores[name].fmeasure for name in ROUGE_TYPES}


# qa -------------------------------------------------------------------------------------------------------------

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, punctuation removed, articles removed, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def _token_f1(prediction: list[str], gold: list[str]) -> float:
    overlap = sum((Counter(prediction) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_scores(prediction: str, answers: Sequence[str]) -> dict[str, float]:
    """Exact match and token F1 of one answer, each the best over the gold answers (aliases). Against no answer
    (`NO_ANSWER`: SQuAD v2's unanswerable questions) both are 100 for an empty prediction and 0 otherwise, as
    SQuAD v2's script scores them."""
    predicted = normalize_answer(prediction)
    if list(answers) == NO_ANSWER:
        return dict.fromkeys(("exact_match", "f1"), 100.0 * (predicted == ""))
    golds = [normalize_answer(answer) for answer in answers]
    return {
        "exact_match": 100.0 * max(float(predicted == gold) for gold in golds),
        "f1": 100.0 * max(_token_f1(predicted.split(), gold.split()) for gold in golds),
    }


# The gold answers of an unanswerable question: SQuAD v2 gives it {"text": [], "answer_start": []}.
NO_ANSWER = [""]


def gold_answers(reference: Any) -> list[str]:
    """The gold answers of a QA reference: a string, a list of aliases, SQuAD's {"text": [...]} or TriviaQA's
    {"aliases": [...]}; `NO_ANSWER` for SQuAD v2's empty {"text": []}; an empty list when there are none."""
    if isinstance(reference, dict):
        if reference.get("text") == [] and "answer_start" in reference:
            return list(NO_ANSWER)
        reference = reference.get("text", reference.get("aliases"))
    if isinstance(reference, str):
        reference = [reference]
    if not isinstance(reference, (list, tuple)):
        return []
    return [answer for answer in reference if isinstance(answer, str) and answer.strip()]


# classify -------------------------------------------------------------------------------------------------------


def classify_scores(prediction: str, label: str) -> dict[str, float]:
    return {"accuracy": 100.0 * (prediction == label)}


def confusion_matrix(golds: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Counts of (gold, predicted) pairs: `matrix[i][j]` documents of label `labels[i]` were predicted `labels[j]`."""
    labels = sorted(set(golds) | set(predictions))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for gold, predicted in zip(golds, predictions, strict=True):
        matrix[index[gold]][index[predicted]] += 1
    return {"labels": labels, "matrix": matrix}


def macro_f1(golds: Sequence[str], predictions: Sequence[str]) -> float:
    """The unweighted mean over labels (those in the gold or predicted labels) of each label's F1, as a percentage;
    rare labels weigh as much as frequent ones, which accuracy hides."""
    hits = Counter(g for g, p in zip(golds, predictions, strict=True) if g == p)
    gold, predicted = Counter(golds), Counter(predictions)
    labels = gold.keys() | predicted.keys()
    if not labels:
        return 0.0
    total = 0.0
    for label in labels:
        total += 2 * hits[label] / (gold[label] + predicted[label])
    return 100.0 * total / len(labels)


# The three tasks ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskMetrics:
    """How one task is scored: the record field holding the prediction, turning a raw reference into what the
    scorer takes (None when it holds nothing usable), the per-document scorer and the names it returns, the
    metric plotted, and corpus-level metrics computed from (reference, prediction) pairs rather than averaged
    over documents."""

    task: str
    prediction_field: str
    reference: Callable[[Any], Any]
    score: Callable[[Any, Any], dict[str, float]]
    per_document: tuple[str, ...]
    headline: str
    corpus: dict[str, Callable[[Sequence[Any], Sequence[Any]], float]] = field(default_factory=dict)
    # What a reference must be, in words; and why one that is there can't be scored against (None where it can,
    # or where it is missing).
    reference_kind: str = "text"
    refusal: Callable[[Any], str | None] = lambda reference: None


def _text(reference: Any) -> str | None:
    return reference if isinstance(reference, str) and reference.strip() else None


def _answers(reference: Any) -> list[str] | None:
    return gold_answers(reference) or None


def _label(reference: Any) -> str | None:
    if isinstance(reference, bool) or not isinstance(reference, (str, int)) or reference == "":
        return None
    return str(reference)


TASKS = {
    "summarize": TaskMetrics(
        "summarize",
        RESULT_FIELDS["summarize"],
        _rouge_reference,
        rouge_scores,
        ROUGE_TYPES,
        "rouge1",
        refusal=_rouge_refusal,
    ),
    "qa": TaskMetrics(
        "qa",
        RESULT_FIELDS["qa"],
        _answers,
        qa_scores,
        ("exact_match", "f1"),
        "f1",
        reference_kind='answer (a text, a list of texts, or SQuAD\'s {"text": [...]})',
    ),
    "classify": TaskMetrics(
        "classify",
        RESULT_FIELDS["classify"],
        _label,
        classify_scores,
        ("accuracy",),
        "accuracy",
        {"macro_f1": macro_f1},
        reference_kind="label (a name, or a whole-number class id)",
    ),
}
