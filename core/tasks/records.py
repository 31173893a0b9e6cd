"""The shape of an output record, shared by every task and by the runner's error records.

Every record carries the same leading keys (`id`, `source`, `model`, `input_tokens`, `truncated`, `chunks`)
so JSONL consumers can rely on them; a task adds its own fields, and a failed document carries `error` instead.
"""

from __future__ import annotations

from typing import Any

from .documents import Document

Record = dict[str, Any]
# The field that holds each task's result: what eval scores, and what tells one task's records from another's.
RESULT_FIELDS = {"summarize": "summary", "qa": "answer", "classify": "label", "mask": "predictions"}


def make_record(doc: Document, model: str, *, input_tokens: int, truncated: bool, chunks: int, **fields: Any) -> Record:
    """A successful document's record: the common keys, the task's fields, and a read warning if there was one."""
    record: Record = {
        "id": doc.id,
        "source": doc.source,
        "model": model,
        "input_tokens": input_tokens,
        "truncated": truncated,
        "chunks": chunks,
        **fields,
    }
    if doc.warning:
        record["warning"] = doc.warning
    return record


def error_record(doc: Document, model: str, reason: str, *, input_tokens: int | None = None) -> Record:
    """A failed document's record: the common keys (token count if it was known), a read warning if there was one,
    and a one-sentence `error`."""
    record: Record = {
        "id": doc.id,
        "source": doc.source,
        "model": model,
        "input_tokens": input_tokens,
        "truncated": False,
        "chunks": 0,
    }
    if doc.warning:
        record["warning"] = doc.warning
    record["error"] = reason
    return record
