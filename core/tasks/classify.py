"""Sequence classification of long documents, with BigBird or BigBirdPegasus classification heads.

A document longer than the window is split into near-equal chunks; each chunk is classified and the chunk
probabilities are averaged, so every part of the document has an equal say in the label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .base import BIGBIRD, PEGASUS, Task
from .documents import Document
from .records import Record


class ClassifyTask(Task):
    name = "classify"
    heads = {BIGBIRD: "BigBirdForSequenceClassification", PEGASUS: "BigBirdPegasusForSequenceClassification"}

    def __init__(self, model: str, *, top_k: int | None = None, **settings: Any) -> None:
        super().__init__(model, **settings)
        self.top_k = top_k
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        # Multi-label heads score each label on its own (sigmoid); single-label heads share one softmax.
        self.multi_label = self.config.problem_type == "multi_label_classification"

    def __call__(self, docs: list[Document]) -> list[Record]:
        capacity = self.max_tokens - self.num_special
        records: list[Record | None] = [None] * len(docs)
        encoded = {}
        jobs: list[tuple[int, int, int]] = []  # one per window: (document index, first token, end token)
        for i, doc in enumerate(docs):
            enc = self.encode(doc.text, capacity)
            if not len(enc.ids):
                records[i] = self.no_tokens(doc)
                continue
            windows, _ = self.windows(len(enc.ids), capacity)
            encoded[i] = enc
            jobs.extend((i, s, e) for s, e in windows)

        sums = {i: torch.zeros(len(self.labels)) for i in encoded}
        counts = dict.fromkeys(encoded, 0)
        windows = (self.wrap(encoded[i].ids[s:e].tolist()) for i, s, e in jobs)
        for idx, probs in self.probabilities(windows, len(docs)):
            for j, row in zip(idx, probs, strict=True):
                sums[jobs[j][0]] += row
                counts[jobs[j][0]] += 1
        for i, enc in encoded.items():
            mean = sums[i] / counts[i]
            ranked = sorted(zip(self.labels, mean.tolist(), strict=True), key=lambda item: -item[1])
            label, score = ranked[0]
            records[i] = self.record(
                docs[i],
                input_tokens=len(enc.ids),
                truncated=len(enc.ids) > capacity and self.strategy == "truncate",
                chunks=counts[i],
                label=label,
                score=score,
                scores=dict(ranked[: self.top_k] if self.top_k else ranked),
            )
        return records  # type: ignore[return-value]

    @torch.inference_mode()
    def probabilities(self, sequences: Iterable[list[int]], size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Label probabilities of input sequences (special tokens included), `size` at a time, as
        (indices, (rows, labels) tensor) pairs."""
        for idx, ids, mask in self.batches(sequences, size):
            logits = self.model(ids, attention_mask=mask).logits.float().cpu()
            yield idx, logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
