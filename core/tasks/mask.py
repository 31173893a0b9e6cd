"""Fill-mask with a BigBird masked-LM head, for documents of any length.

Each mask token is predicted from a window of the document centred on it (or the whole document when it fits),
so the model sees as much context on either side of every mask as the window allows. Predictions report the
filled-in document as `sequence`, built from character offsets so the rest of the text stays exactly as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import (
    BIGBIRD,
    NO_TOKENS,
    Chunked,
    DocumentError,
    Plan,
    Task,
    TaskError,
    attention_of,
    jobs_by_document,
    require_positive,
)
from .documents import Document, clean_value
from .records import Record


class MaskTask(Task):
    """Fill-mask with BigBird's masked-LM head: `predictions` holds, for each mask token of a document, its best
    tokens, each with its score and the document's text with it filled in (`sequence`)."""

    name = "mask"
    heads = {BIGBIRD: "BigBirdForMaskedLM"}

    def __init__(self, model: str, *, top_k: int = 5, targets: Sequence[str] | None = None, **settings: Any) -> None:
        """`targets`: restrict the predictions to these words, as the fill-mask pipeline does (a word that is no
        vocabulary entry is tokenized and its first token stands for it; scores stay those of the full softmax)."""
        require_positive(top_k=top_k)
        if isinstance(targets, str):  # one word, as the pipeline takes it, not its letters
            targets = [targets]
        targets = None if targets is None else [clean_value(word) for word in targets]  # a shell's non-UTF-8 bytes
        super().__init__(model, **settings)
        self.top_k = top_k
        self.mask_id = self.tokenizer.mask_token_id
        self.mask_text = self.tokenizer.convert_ids_to_tokens([self.mask_id])[0]
        self.target_ids = self._target_ids(targets) if targets else None

    def _target_ids(self, targets: Sequence[str]) -> torch.Tensor:
        """The ids the predictions are restricted to. A word that is no vocabulary entry is tokenized and its first
        token stands for it, as in the fill-mask pipeline; the user hears when that token is only part of the word,
        and a word whose first token is only sentencepiece's word-boundary marker "▁" (which fills in as "") is
        left out, named in a warning."""
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for word in targets:
            token_id = vocab.get(word)
            if token_id is None:
                pieces = self.encode(word).ids
                if not len(pieces):
                    continue  # nothing left once tokenized (only spaces): no candidate
                token_id = int(pieces[0])
                first = self.tokenizer.convert_ids_to_tokens([token_id])[0]
                if first == "▁":
                    self.warnings.append(
                        f"--targets: {word!r} is not in the vocabulary and its first token is only the word-boundary"
                        " marker '▁', which would fill in as nothing; it is left out."
                    )
                    continue
                if len(pieces) > 1:
                    self.warnings.append(
                        f"--targets: {word!r} is not in the vocabulary; its first token {first!r} stands for it."
                    )
            if token_id not in ids:
                ids.append(token_id)
        if not ids:
            raise TaskError("--targets: none of the words gives a token that fills in as a word.")
        return torch.tensor(ids, dtype=torch.long)

    def split(self, doc: Document) -> MaskChunked:
        """The document's tokens, its windows (each with the mask positions it predicts), and whether it is cut."""
        capacity = self.max_tokens - self.num_special
        enc = self.encode(doc.text, capacity)
        if not len(enc.ids):
            raise DocumentError(NO_TOKENS)
        masks = np.flatnonzero(enc.ids == self.mask_id).tolist()
        if not masks:
            raise DocumentError(f"the document has no {self.mask_text} token to fill in.", input_tokens=len(enc.ids))
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
        return MaskChunked(ids=enc.ids, windows=list(windows), truncated=cut, offsets=enc.offsets, masks=windows)

    def plan(self, doc: Document) -> Plan:
        chunked = self.split(doc)
        return Plan.of(len(chunked.ids), chunked.windows, chunked.truncated, self.num_special)

    def process(self, docs: list[Document], per_pass: int) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        # One job per distinct window: (document index, window start, window end, mask positions it predicts).
        prepared: dict[int, MaskChunked] = self.split_each(docs, records)
        jobs = [(i, s, e, ks) for i, chunked in prepared.items() for (s, e), ks in chunked.masks.items()]

        predictions: dict[int, dict[int, list[dict[str, Any]]]] = {i: {} for i in prepared}
        sequences = (self.wrap(prepared[i].ids[s:e].tolist()) for i, s, e, _ in jobs)
        first = self.tokenizer.text_offsets(0)[0]  # where the window's tokens start, after any [CLS]
        ran: list[str] = []  # the attention each job's pass ran
        for batch in self.batches(sequences, per_pass):
            ran += [batch.attention] * len(batch.indices)
            with torch.inference_mode():
                logits = self.model(batch.input_ids, attention_mask=batch.attention_mask).logits.float().cpu()
            for row, j in enumerate(batch.indices):
                i, s, _, ks = jobs[j]
                for k in ks:
                    probs = logits[row, k - s + first].softmax(-1)
                    predictions[i][k] = self._top(docs[i].text, prepared[i].offsets[k], probs)

        inputs_of = jobs_by_document(jobs)
        for i, chunked in prepared.items():
            found = [predictions[i][k] for k in sorted(predictions[i])]
            inputs = inputs_of.get(i, [])  # none when every mask lies past a truncated window
            records[i] = self.record(
                docs[i],
                input_tokens=len(chunked.ids),
                truncated=chunked.truncated,
                chunks=len(chunked.windows),
                predictions=found,
                attention=attention_of(ran, inputs),
            )
        return records  # type: ignore[return-value]

    def _top(self, text: str, span: tuple[int, int], probs: torch.Tensor) -> list[dict[str, Any]]:
        """The top-k fillers of one mask, each with the document text it would make."""
        start, end = int(span[0]), int(span[1])
        # The mask token's span may include the space sentencepiece attaches in front of it; keep that space.
        while start < end and text[start].isspace():
            start += 1
        candidates = self.target_ids if self.target_ids is not None else torch.arange(probs.shape[0])
        top = probs[candidates].topk(min(self.top_k, candidates.shape[0]))
        out = []
        for score, token_id in zip(top.values.tolist(), candidates[top.indices].tolist(), strict=True):
            token = self.tokenizer.decode([token_id]).strip()
            out.append(
                {"token": token, "token_id": token_id, "score": score, "sequence": text[:start] + token + text[end:]}
            )
        return out


@dataclass(kw_only=True)
class MaskChunked(Chunked):
    """A document cut for fill-mask: the character offsets of its tokens, and the mask positions each window
    predicts (a window per mask, shared by masks close together)."""

    offsets: Any
    masks: dict[tuple[int, int], list[int]]
