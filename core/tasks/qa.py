"""Extractive question answering over long documents, with BigBird or BigBirdPegasus QA heads.

The document is tokenized once with character offsets. Windows of it that fit next to the question overlap by a
quarter (`doc_stride`), so an answer cut by one window's edge lies whole in the next; each window scores its spans
(start probability × end probability under one softmax over [CLS] and the window's document tokens). Answers are
those of the transformers question-answering pipeline: a span widened to the whole words it touches (a user asked
"who approved?" wants `approved`, not the piece `ved`), and spans of the same text (case aside) over all windows
merged into one answer whose score is their sum, so an answer found in two overlapping windows counts twice.
Offsets map the winning tokens back to characters, so `text[start:end] == answer`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import (
    BIGBIRD,
    NO_TOKENS,
    PEGASUS,
    Chunked,
    DocumentError,
    Plan,
    Task,
    TaskError,
    attention_of,
    jobs_by_document,
    require_positive,
)
from .documents import Document, InputError, clean_value, describe
from .records import Record


@dataclass
class Question:
    """A document's question: its text (reported in the record), its ids (cut at --max-question-tokens), and the
    warning the cut gives."""

    text: str
    ids: list[int]
    warning: str | None


def one_per_question(docs: Iterable[Document], questions: Sequence[str] | None, field: str) -> Iterator[Document]:
    """Each document once per question it is asked, in input order: the `questions` given for every document
    (several -Q, or --questions FILE), else a list in the record's `field`. Each copy carries its question in
    `field` and the id `<document id>#q<k>` (k counts from 1), unique and the same in every run, so --resume and
    shards treat each (document, question) as one unit. A document asked one question (a single -Q, a string
    field) passes unchanged, its id too; one that could not be read passes once, as its one error record."""
    for doc in docs:
        asked = list(questions) if questions is not None else doc.fields.get(field)
        if not isinstance(asked, list) or doc.error is not None or not asked:
            yield doc
            continue
        for k, question in enumerate(asked, 1):
            yield replace(doc, id=f"{doc.id}#q{k}", fields={**doc.fields, field: question})


def read_questions(path: str | Path) -> list[str]:
    """The questions of a file, one a line (blank lines skipped); InputError in one sentence when it can't be read
    or holds none."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"--questions {path} can't be read ({describe(exc)})") from None
    questions = [clean_value(line.strip()) for line in text.splitlines() if line.strip()]
    if not questions:
        raise InputError(f"--questions {path} holds no question (one a line)")
    return questions


@dataclass(kw_only=True)
class QuestionChunked(Chunked):
    """A document cut for question answering: the character offsets of its tokens, and its question (each window
    is read beside it)."""

    offsets: Any
    question: Question


# Question tokens kept by default (the reference pipeline's max_question_len): the rest of the window goes to
# the document.
MAX_QUESTION_TOKENS = 64


class QATask(Task):
    """Extractive question answering: records with `answer` (a span of the document's text, `start`/`end` its
    character offsets) and `score`, the best spans over all the windows of a long document. The question is
    `question` for every document or each record's `question_field`."""

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
        doc_stride: int | None = None,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        max_seq_len: int | None = None,
        **settings: Any,
    ) -> None:
        """`doc_stride`: tokens shared by consecutive windows of a long document [default: a quarter of a
        window]. `handle_impossible_answer`: the null span ([CLS]) competes with the answers; when it wins, the
        answer is "" with its score, as in the question-answering pipeline. `align_to_words`: an answer is the
        whole words its tokens touch (False: the token pieces' own characters). `max_seq_len`: the longest window,
        question and special tokens included [default: the model's]."""
        require_positive(
            top_k=top_k,
            max_answer_tokens=max_answer_tokens,
            max_question_tokens=max_question_tokens,
            max_seq_len=max_seq_len,
        )
        super().__init__(model, **settings)
        if max_seq_len is not None and max_seq_len > self.max_tokens:
            self.warnings.append(
                f"--max-seq-len {max_seq_len} is past the model's {self.max_tokens} positions: windows are "
                f"{self.max_tokens} tokens."
            )
        self.window_is_the_models = max_seq_len is None or max_seq_len >= self.max_tokens
        self.max_tokens = min(self.max_tokens, max_seq_len or self.max_tokens)
        self.align_to_words = align_to_words
        # Which ids open a word: sentencepiece marks a word's first piece with "▁", as the pipeline's fast
        # tokenizer splits words (its Metaspace pre-tokenizer), so a word is a run from one such piece to the next.
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self.opens_word = np.array([piece.startswith("▁") for piece in pieces], dtype=bool)
        self.doc_stride = doc_stride
        self.handle_impossible_answer = handle_impossible_answer
        self.question = None if question is None else clean_value(question)  # a shell's non-UTF-8 bytes
        self.question_field = question_field
        self.top_k = top_k
        self.max_answer_tokens = max_answer_tokens
        self.max_question_tokens = max_question_tokens
        # An explicit --question is the same for every document: tokenized once, not once per document.
        self.question_ids = None if self.question is None else self.encode(self.question).ids.tolist()
        # The null span is the [CLS] opening every framed input; a tokenizer without one (Pegasus) has none. As in
        # the question-answering pipeline, [CLS] takes part in every window's softmax, whether or not it may win.
        cls = self.tokenizer.cls_token_id
        self.has_null_span = cls is not None and self.wrap([], [])[:1] == [cls]
        room = self.max_tokens - len(self.wrap([], []))
        if room < 2:  # a question's token and a document's beside the special tokens
            raise TaskError(
                f"--max-seq-len {max_seq_len} leaves no room for a question and a document beside the "
                f"{self.max_tokens - room} special tokens: give {self.max_tokens - room + 2} or more."
            )
        if doc_stride is not None and not 0 <= doc_stride < room:
            raise TaskError(f"--doc-stride takes 0 to {room - 1} tokens (a window holds {room}), not {doc_stride}.")
        if handle_impossible_answer and not self.has_null_span:
            raise TaskError(
                "--handle-impossible-answer scores the [CLS] token as 'no answer', and this model's tokenizer has none."
            )
        # BigBird's QA head keeps answers out of the question when told its length; Pegasus's has no such input.
        self.head_takes_question_lengths = (
            self.model is not None and "question_lengths" in inspect.signature(self.model.forward).parameters
        )

    def split(self, doc: Document) -> QuestionChunked:
        """The document's tokens, its windows beside the question (overlapping by `doc_stride` tokens), whether
        text is cut, and its question. DocumentError when there is no usable question, the question
        leaves no room for the document, or the document has no tokens."""
        # An explicit --question wins over the record's field: the user typed it for this run.
        text = self.question if self.question is not None else doc.fields.get(self.question_field)
        if text is None or not str(text).strip():
            raise DocumentError("no question: give --question or a question field in the record.")
        if isinstance(text, (bool, list, dict)):  # its Python repr ("['x']") would have been asked instead
            raise DocumentError(f"the {self.question_field!r} field is a {type(text).__name__}, not a question.")
        text = str(text)
        q_ids = self.question_ids if self.question is not None else self.encode(text).ids.tolist()
        if not q_ids:
            raise DocumentError("the question has no tokens (only control or zero-width characters).")
        warning = None
        if len(q_ids) > self.max_question_tokens:
            warning = f"the question has {len(q_ids)} tokens; only its first {self.max_question_tokens} were used."
            q_ids = q_ids[: self.max_question_tokens]
        capacity = self.max_tokens - len(self.wrap(q_ids, []))
        if capacity < 1:
            raise DocumentError(
                f"the question takes {len(q_ids)} tokens and leaves no room in the "
                f"{'model' if self.window_is_the_models else '--max-seq-len'}'s {self.max_tokens}-token window; "
                f"lower --max-question-tokens{'' if self.window_is_the_models else ' or raise --max-seq-len'}."
            )
        enc = self.encode(doc.text, capacity)
        if not len(enc.ids):
            raise DocumentError(NO_TOKENS)
        overlap = capacity // 4 if self.doc_stride is None else self.doc_stride
        if overlap >= capacity and len(enc.ids) > capacity and self.strategy == "chunk":
            raise DocumentError(
                f"--doc-stride {overlap} leaves the windows no room to advance: beside this question a window holds"
                f" {capacity} document tokens."
            )
        windows, cut = self.windows(len(enc.ids), capacity, overlap=overlap)
        question = Question(text, q_ids, warning)
        return QuestionChunked(ids=enc.ids, windows=windows, truncated=cut, offsets=enc.offsets, question=question)

    def plan(self, doc: Document) -> Plan:
        chunked = self.split(doc)
        return Plan.of(len(chunked.ids), chunked.windows, chunked.truncated, len(self.wrap(chunked.question.ids, [])))

    def process(self, docs: list[Document], per_pass: int) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        prepared: dict[int, QuestionChunked] = self.split_each(docs, records)
        # One job per window: (document index, window start, window end).
        jobs = [(i, s, e) for i, chunked in prepared.items() for s, e in chunked.windows]

        candidates: dict[int, list[tuple[float, int, int]]] = {i: [] for i in prepared}  # (score, char span)
        null_scores: dict[int, float] = {}  # lowest no-answer score over each document's windows
        sequences = (self.wrap(prepared[i].question.ids, prepared[i].ids[s:e].tolist()) for i, s, e in jobs)
        firsts = [self._context_start(prepared[i].question.ids) for i, _, _ in jobs]
        ran: list[str] = []  # the attention each job's pass ran
        for idx, ids, mask, attention in self.batches(sequences, per_pass):
            ran += [attention] * len(idx)
            start_logits, end_logits = self._logits(ids, mask, [firsts[j] for j in idx])
            for row, j in enumerate(idx):
                i, s, e = jobs[j]
                context = slice(firsts[j], firsts[j] + e - s)
                if self.has_null_span:
                    starts, ends, null = self._with_null(start_logits[row], end_logits[row], context)
                    if self.handle_impossible_answer:
                        null_scores[i] = min(null, null_scores.get(i, null))
                else:
                    starts, ends = start_logits[row, context].softmax(-1), end_logits[row, context].softmax(-1)
                chunked = prepared[i]
                candidates[i] += self._best_spans(starts, ends, docs[i].text, chunked.offsets[s:e], chunked.ids[s:e])

        inputs_of = jobs_by_document(jobs)
        for i, chunked in prepared.items():
            question = chunked.question
            doc = docs[i]
            answers = self._answers(doc.text, candidates[i])
            if i in null_scores:
                null = {"answer": "", "score": null_scores[i], "start": 0, "end": 0}
                answers = sorted([*answers, null], key=lambda answer: -answer["score"])[: self.top_k]
            fields: dict[str, Any] = dict(answers[0]) if answers else {"answer": "", "score": 0.0, "start": 0, "end": 0}
            if self.top_k > 1:
                fields["answers"] = answers
            inputs = inputs_of[i]
            fields["attention"] = attention_of(ran, inputs)
            records[i] = self.record(
                doc,
                input_tokens=len(chunked.ids),
                truncated=chunked.truncated,
                chunks=len(inputs),
                question=question.text,
                **fields,
            )
            if question.warning:
                records[i]["warning"] = " ".join(filter(None, [records[i].get("warning"), question.warning]))
        return records  # type: ignore[return-value]

    @staticmethod
    def _with_null(
        start_logits: torch.Tensor, end_logits: torch.Tensor, context: slice
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """As the question-answering pipeline scores the null span: one softmax over [CLS] and the document's
        tokens. Returns the document tokens' start and end probabilities under it, and the null score
        p_start([CLS]) × p_end([CLS])."""
        p_start = torch.cat([start_logits[:1], start_logits[context]]).softmax(-1)
        p_end = torch.cat([end_logits[:1], end_logits[context]]).softmax(-1)
        return p_start[1:], p_end[1:], float(p_start[0] * p_end[0])

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

    def _best_spans(
        self, p_start: torch.Tensor, p_end: torch.Tensor, text: str, offsets: Any, ids: np.ndarray
    ) -> list[tuple[float, int, int]]:
        """The window's best spans, best first, as (score, first character, end character), as the pipeline picks
        them: its top-k spans of tokens (top 2k + 10 when aligning to words, since widened spans can repeat), each
        widened to the whole words its tokens touch within the window when `align_to_words`.

        The character spans leave out the whitespace before a word (our offsets do; the pipeline's fast tokenizer
        gives a word's first piece the blank before it), so an answer never starts or ends with a blank.
        """
        n = p_start.shape[0]
        # band[d, a]: the span from token a to token a + d, for lengths up to max_answer_tokens (-1: no such span).
        width = min(self.max_answer_tokens, n)
        band = torch.full((width, n), -1.0)
        for d in range(width):
            band[d, : n - d] = p_start[: n - d] * p_end[d:]
        flat = band.flatten()
        wanted = self.top_k * 2 + 10 if self.align_to_words else self.top_k
        opens = self.opens_word[ids] if self.align_to_words else None
        spans = []
        for k in flat.argsort(descending=True, stable=True)[:wanted].tolist():
            score = float(flat[k])
            if score < 0:
                break
            a, b = k % n, k % n + k // n
            if opens is not None:
                while a > 0 and not opens[a]:
                    a -= 1
                while b + 1 < n and not opens[b + 1]:
                    b += 1
            start, end = int(offsets[a][0]), int(offsets[b][1])
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            spans.append((score, start, end))
        return spans

    def _answers(self, text: str, candidates: list[tuple[float, int, int]]) -> list[dict[str, Any]]:
        """The top-k answers over all windows, best first. Spans of the same text, case aside, are one answer: it
        keeps the first one's place and sums their scores (the pipeline's rule: a span two windows found counts
        twice)."""
        merged: dict[str, dict[str, Any]] = {}
        for score, start, end in candidates:
            answer = merged.setdefault(
                text[start:end].lower(), {"answer": text[start:end], "score": 0.0, "start": start, "end": end}
            )
            answer["score"] += score
        return sorted(merged.values(), key=lambda answer: -answer["score"])[: self.top_k]
