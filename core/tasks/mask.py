"""Fill-mask with a BigBird masked-LM head, for documents of any length.

Each mask token is predicted from a window of the document centred on it (or the whole document when it fits),
so the model sees as much context on either side of every mask as the window allows. Predictions report the
filled-in document as `sequence`, built from character offsets so the rest of the text stays exactly as given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import BIGBIRD, Task
from .documents import Document
from .records import Record


class MaskTask(Task):
    name = "mask"
    heads = {BIGBIRD: "BigBirdForMaskedLM"}

    def __init__(self, model: str, *, top_k: int = 5, **settings: Any) -> None:
        super().__init__(model, **settings)
        self.top_k = top_k
        self.mask_id = self.tokenizer.mask_token_id
        self.mask_text = self.tokenizer.convert_ids_to_tokens([self.mask_id])[0]

    def __call__(self, docs: list[Document]) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        capacity = self.max_tokens - self.num_special
        # One job per distinct window: (document index, window start, window end, mask positions it predicts).
        jobs: list[tuple[int, int, int, list[int]]] = []
        prepared = {}
        for i, doc in enumerate(docs):
            enc = self.encode(doc.text, capacity)
            if not len(enc.ids):
                records[i] = self.no_tokens(doc)
                continue
            masks = np.flatnonzero(enc.ids == self.mask_id).tolist()
            if not masks:
                records[i] = self.error(
                    doc, f"the document has no {self.mask_text} token to fill in.", input_tokens=len(enc.ids)
                )
                continue
            n = len(enc.ids)
            cut = n > capacity and self.strategy == "truncate"
            windows: dict[tuple[int, int], list[int]] = {}
            for k in masks:
                if n <= capacity:
                    span = (0, n)
                elif self.strategy == "truncate":
                    if k >= capacity:
                        continue  # cut off with the rest of the document
                    span = (0, capacity)
                else:
                    start = min(max(0, k - capacity // 2), n - capacity)
                    span = (start, start + capacity)
                windows.setdefault(span, []).append(k)
            prepared[i] = (enc, cut, len(windows))
            jobs.extend((i, s, e, ks) for (s, e), ks in windows.items())

        predictions: dict[int, dict[int, list[dict[str, Any]]]] = {i: {} for i in prepared}
        sequences = (self.wrap(prepared[i][0].ids[s:e].tolist()) for i, s, e, _ in jobs)
        first = self.tokenizer.text_offsets(0)[0]  # where the window's tokens start, after any [CLS]
        for idx, ids, mask in self.batches(sequences, len(docs)):
            with torch.inference_mode():
                logits = self.model(ids, attention_mask=mask).logits.float().cpu()
            for row, j in enumerate(idx):
                i, s, _, ks = jobs[j]
                enc = prepared[i][0]
                for k in ks:
                    probs = logits[row, k - s + first].softmax(-1)
                    predictions[i][k] = self._top(docs[i].text, enc.offsets[k], probs)

        for i, (enc, cut, n_windows) in prepared.items():
            found = [predictions[i][k] for k in sorted(predictions[i])]
            records[i] = self.record(
                docs[i], input_tokens=len(enc.ids), truncated=cut, chunks=n_windows, predictions=found
            )
        return records  # type: ignore[return-value]

    def _top(self, text: str, span: tuple[int, int], probs: torch.Tensor) -> list[dict[str, Any]]:
        """The top-k fillers of one mask, each with the document text it would make."""
        start, end = int(span[0]), int(span[1])
        # The mask token's span may include the space sentencepiece attaches in front of it; keep that space.
        while start < end and text[start].isspace():
            start += 1
        top = probs.topk(min(self.top_k, probs.shape[0]))
        out = []
        for score, token_id in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            token = self.tokenizer.decode([token_id]).strip()
            out.append(
                {"token": token, "token_id": token_id, "score": score, "sequence": text[:start] + token + text[end:]}
            )
        return out
