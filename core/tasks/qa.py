"""Extractive question answering over long documents, with BigBird or BigBirdPegasus QA heads.

The document is tokenized once with character offsets. Windows of it that fit next to the question overlap by a
quarter, so an answer cut by one window's edge lies whole in the next; each window scores its spans
(start probability × end probability, as the transformers pipeline does) and the best spans over all windows
win. Offsets map the winning tokens back to characters, so `text[start:end] == answer`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .base import BIGBIRD, PEGASUS, Encoding, Task
from .documents import Document
from .records import Record

# Question tokens kept by default (the reference pipeline's max_question_len): the rest of the window goes to
# the document.
MAX_QUESTION_TOKENS = 64


class QATask(Task):
    name = "qa"
    heads = {BIGBIRD: "BigBirdForQuestionAnswering", PEGASUS: "BigBirdPegasusForQuestionAnswering"}

    def __init__(
        self,
        model: str,
        *,
        question: str | None = None,
        question_field: str = "question",
        top_k: int = 1,
        max_answer_tokens: int = 30,
        max_question_tokens: int = MAX_QUESTION_TOKENS,
        **settings: Any,
    ) -> None:
        super().__init__(model, **settings)
        self.question = question
        self.question_field = question_field
        self.top_k = top_k
        self.max_answer_tokens = max_answer_tokens
        self.max_question_tokens = max_question_tokens
        # BigBird's QA head keeps answers out of the question when told its length; Pegasus's has no such input.
        self.head_takes_question_lengths = "question_lengths" in inspect.signature(self.model.forward).parameters

    def __call__(self, docs: list[Document]) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        prepared: dict[int, tuple[Encoding, list[int], bool]] = {}  # document → (encoding, question ids, cut)
        asked: dict[int, tuple[str, str | None]] = {}  # document → (question, warning about it)
        jobs: list[tuple[int, int, int]] = []  # one per window: (document index, window start, window end)
        for i, doc in enumerate(docs):
            # An explicit --question wins over the record's field: the user typed it for this run.
            question = self.question if self.question is not None else doc.fields.get(self.question_field)
            if question is None or not str(question).strip():
                records[i] = self.error(doc, "no question: give --question or a question field in the record.")
                continue
            question = str(question)
            q_ids = self.encode(question).ids.tolist()
            if not q_ids:
                records[i] = self.error(doc, "the question has no tokens (only control or zero-width characters).")
                continue
            warning = None
            if len(q_ids) > self.max_question_tokens:
                warning = f"the question has {len(q_ids)} tokens; only its first {self.max_question_tokens} were used."
                q_ids = q_ids[: self.max_question_tokens]
            capacity = self.max_tokens - len(self.wrap(q_ids, []))
            if capacity < 1:
                reason = (
                    f"the question takes {len(q_ids)} tokens and leaves no room in the model's {self.max_tokens}-token"
                    " window; lower --max-question-tokens."
                )
                records[i] = self.error(doc, reason)
                continue
            enc = self.encode(doc.text, capacity)
            if not len(enc.ids):
                records[i] = self.no_tokens(doc)
                continue
            windows, cut = self.windows(len(enc.ids), capacity, overlap=capacity // 4)
            prepared[i] = (enc, q_ids, cut)
            asked[i] = (question, warning)
            jobs.extend((i, s, e) for s, e in windows)

        candidates: dict[int, list[tuple[float, int, int]]] = {i: [] for i in prepared}
        sequences = (self.wrap(prepared[i][1], prepared[i][0].ids[s:e].tolist()) for i, s, e in jobs)
        firsts = [self._context_start(prepared[i][1]) for i, _, _ in jobs]
        for idx, ids, mask in self.batches(sequences, len(docs)):
            start_logits, end_logits = self._logits(ids, mask, [firsts[j] for j in idx])
            for row, j in enumerate(idx):
                i, s, e = jobs[j]
                context = slice(firsts[j], firsts[j] + e - s)
                for score, a, b in self._best_spans(start_logits[row, context], end_logits[row, context]):
                    candidates[i].append((score, s + a, s + b))

        for i, (enc, _, cut) in prepared.items():
            doc = docs[i]
            answers = self._answers(doc.text, enc, candidates[i])
            fields: dict[str, Any] = dict(answers[0]) if answers else {"answer": "", "score": 0.0, "start": 0, "end": 0}
            if self.top_k > 1:
                fields["answers"] = answers
            chunks = sum(1 for j, _, _ in jobs if j == i)
            question, warning = asked[i]
            records[i] = self.record(
                doc, input_tokens=len(enc.ids), truncated=cut, chunks=chunks, question=question, **fields
            )
            if warning:
                records[i]["warning"] = " ".join(filter(None, [records[i].get("warning"), warning]))
        return records  # type: ignore[return-value]

    def _context_start(self, q_ids: list[int]) -> int:
        """Position of the first document token in the framed (question, document) pair."""
        return self.tokenizer.text_offsets(len(q_ids))[1]

    @torch.inference_mode()
    def _logits(self, ids: torch.Tensor, mask: torch.Tensor, firsts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.head_takes_question_lengths:
            lengths = torch.tensor(firsts, dtype=torch.long, device=ids.device)
            out = self.model(ids, attention_mask=mask, question_lengths=lengths)
        else:
            out = self.model(ids, attention_mask=mask)
        return out.start_logits.float().cpu(), out.end_logits.float().cpu()

    def _best_spans(self, start_logits: torch.Tensor, end_logits: torch.Tensor) -> list[tuple[float, int, int]]:
        """The window's top-k spans (score, first token, last token) over its document tokens only."""
        p_start = start_logits.softmax(-1)
        p_end = end_logits.softmax(-1)
        n = p_start.shape[0]
        # band[d, a]: the span from token a to token a + d, for lengths up to max_answer_tokens (-1: no such span).
        width = min(self.max_answer_tokens, n)
        band = torch.full((width, n), -1.0)
        for d in range(width):
            band[d, : n - d] = p_start[: n - d] * p_end[d:]
        top = band.flatten().topk(min(self.top_k, n))
        return [(float(v), int(k) % n, int(k) % n + int(k) // n) for v, k in zip(top.values, top.indices, strict=True)]

    def _answers(self, text: str, enc: Encoding, candidates: list[tuple[float, int, int]]) -> list[dict[str, Any]]:
        """The top-k distinct answers as character spans of `text`, best first."""
        best: dict[tuple[int, int], float] = {}
        for score, a, b in candidates:
            start, end = int(enc.offsets[a][0]), int(enc.offsets[b][1])
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start and score > best.get((start, end), -1.0):
                best[(start, end)] = score
        ranked = sorted(best.items(), key=lambda item: -item[1])[: self.top_k]
        return [
            {"answer": text[start:end], "score": score, "start": start, "end": end} for (start, end), score in ranked
        ]
