"""Sequence classification of long documents, with BigBird or BigBirdPegasus classification heads.

A document longer than the window is split into near-equal chunks; each chunk is classified and the chunk
scores are averaged, so every part of the document has an equal say in the label. Scores are probabilities
(softmax, or sigmoid per label) or raw logits, chosen as the text-classification pipeline does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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
from .documents import Document
from .records import Record

FUNCTIONS = ("softmax", "sigmoid", "none")


def default_function(problem_type: str | None, num_labels: int) -> str:
    """The text-classification pipeline's choice: raw scores for regression, a sigmoid per label for multi-label
    heads and single-output heads, one softmax over the labels otherwise."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


class ClassifyTask(Task):
    """Document classification with a fine-tuned checkpoint's labels (config.json's id2label): records with `label`,
    `score` and `scores`; a long document's chunks are classified in turn and their scores averaged."""

    name = "classify"
    heads = {BIGBIRD: "BigBirdForSequenceClassification", PEGASUS: "BigBirdPegasusForSequenceClassification"}

    def __init__(
        self,
        model: str,
        *,
        top_k: int | None = None,
        function: str | None = None,
        text_pair_field: str | None = None,
        **settings: Any,
    ) -> None:
        """`top_k`: labels kept in `scores` (None: all). `function`: softmax, sigmoid or none (raw logits) [default:
        from the checkpoint's problem_type]. `text_pair_field`: the document field holding the second text of a
        pair (NLI-style checkpoints); each chunk of the text is read with the whole second text."""
        require_positive(top_k=top_k)
        super().__init__(model, **settings)
        self.top_k = top_k
        names = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self.labels = self.config.label_names()
        renamed = [new for new, old in zip(self.labels, names, strict=True) if new != old]
        if renamed:
            self.warnings.append(f"the checkpoint gives labels the same name; they go by {', '.join(renamed)}.")
        self.function = function or default_function(self.config.problem_type, self.config.num_labels)
        if self.function not in FUNCTIONS:
            raise TaskError(f"--function takes {', '.join(FUNCTIONS)}, not {self.function!r}.")
        self.text_pair_field = text_pair_field

    def split(self, doc: Document) -> PairChunked:
        """The text's ids, its windows beside the pair, whether text is cut, and the pair's ids (or None)."""
        pair = None
        if self.text_pair_field is not None:
            second = doc.fields.get(self.text_pair_field)
            if not isinstance(second, str) or not second.strip():
                raise DocumentError(f"no text pair: the record has no {self.text_pair_field!r} text.")
            pair = self.encode(second).ids.tolist()
        framing = self._framing(pair)
        if framing >= self.max_tokens:
            raise DocumentError(f"the text pair alone fills the model's {self.max_tokens}-token window.")
        capacity = self.max_tokens - framing
        ids = self.encode(doc.text, capacity).ids.tolist()
        if not ids:
            raise DocumentError(NO_TOKENS)
        windows, cut = self.windows(len(ids), capacity)
        return PairChunked(ids=ids, windows=windows, truncated=cut, pair=pair)

    def _framing(self, pair: list[int] | None) -> int:
        """Tokens each chunk of the text is read with: the special tokens, and the second text of a pair."""
        return len(self.wrap([], pair))

    def plan(self, doc: Document) -> Plan:
        chunked = self.split(doc)
        return Plan.of(len(chunked.ids), chunked.windows, chunked.truncated, self._framing(chunked.pair))

    def process(self, docs: list[Document], per_pass: int) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        split: dict[int, PairChunked] = self.split_each(docs, records)
        # One job per window: (document index, first token, end token).
        jobs = [(i, s, e) for i, chunked in split.items() for s, e in chunked.windows]

        sequences = (self.wrap(split[i].ids[s:e], split[i].pair) for i, s, e in jobs)
        passes = list(self._scored_passes(sequences, per_pass))
        scores_of = torch.cat([torch.zeros(0, len(self.labels)), *(scores for scores, _, _ in passes)])
        ran = [attention for _, attention, n in passes for _ in range(n)]
        rows_of = jobs_by_document(jobs)
        for i, chunked in split.items():
            rows = rows_of[i]
            mean = scores_of[rows].mean(dim=0)
            ranked = sorted(zip(self.labels, mean.tolist(), strict=True), key=lambda item: -item[1])
            label, score = ranked[0]
            records[i] = self.record(
                docs[i],
                input_tokens=len(chunked.ids),
                truncated=chunked.truncated,
                chunks=len(rows),
                label=label,
                score=score,
                scores=dict(ranked[: self.top_k] if self.top_k else ranked),
                attention=attention_of(ran, rows),
            )
        return records  # type: ignore[return-value]

    def scores(self, sequences: Iterable[list[int]], per_pass: int = 1) -> torch.Tensor:
        """Label scores (after `function`) of each input sequence (special tokens included), `per_pass` sequences a
        forward pass: (sequences, labels). Sequences are read lazily; chunks of one document are averaged after the
        function, so each has an equal say."""
        rows = [torch.zeros(0, len(self.labels))]
        return torch.cat(rows + [scores for scores, _, _ in self._scored_passes(sequences, per_pass)])

    @torch.inference_mode()
    def _scored_passes(self, sequences: Iterable[list[int]], per_pass: int) -> Iterator[tuple[torch.Tensor, str, int]]:
        """Each forward pass's label scores, the attention it ran and how many sequences it held."""
        for batch in self.batches(sequences, per_pass):
            logits = self.model(batch.input_ids, attention_mask=batch.attention_mask).logits.float().cpu()
            if self.function == "softmax":
                logits = logits.softmax(dim=-1)
            elif self.function == "sigmoid":
                logits = logits.sigmoid()
            yield logits, batch.attention, len(batch.indices)


@dataclass(kw_only=True)
class PairChunked(Chunked):
    """A document cut for classification, with the ids of its text pair's second text (None without a pair)."""

    pair: list[int] | None
