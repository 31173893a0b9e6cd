"""Sequence classification of long documents, with BigBird or BigBirdPegasus classification heads.

A document longer than the window is split into near-equal chunks; each chunk is classified and the chunk
probabilities are averaged, so every part of the document has an equal say in the label.
"""

from __future__ import annotations

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
        encoded = [self.encode(doc.text).ids for doc in docs]
        jobs: list[tuple[int, list[int]]] = []  # (document index, chunk ids)
        truncated = []
        for i, ids in enumerate(encoded):
            windows, cut = self.windows(len(ids), self.max_tokens - self.num_special)
            jobs.extend((i, ids[s:e]) for s, e in windows)
            truncated.append(cut)

        probs = self.probabilities([self.wrap(ids) for _, ids in jobs])
        records = []
        for i, doc in enumerate(docs):
            rows = [j for j, (owner, _) in enumerate(jobs) if owner == i]
            mean = probs[rows].mean(dim=0)
            ranked = sorted(zip(self.labels, mean.tolist(), strict=True), key=lambda item: -item[1])
            scores = dict(ranked[: self.top_k] if self.top_k else ranked)
            label, score = ranked[0]
            records.append(
                self.record(
                    doc,
                    input_tokens=len(encoded[i]),
                    truncated=truncated[i],
                    chunks=len(rows),
                    label=label,
                    score=score,
                    scores=scores,
                )
            )
        return records

    @torch.inference_mode()
    def probabilities(self, sequences: list[list[int]]) -> torch.Tensor:
        """Label probabilities for each input sequence (special tokens included), as a (sequences, labels) tensor."""
        out = torch.zeros(len(sequences), len(self.labels))
        for idx, ids, mask in self.batches(sequences):
            logits = self.model(ids, attention_mask=mask).logits.float().cpu()
            out[idx] = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
        return out
