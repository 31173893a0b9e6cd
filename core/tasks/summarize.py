"""Abstractive summarization with BigBirdPegasus, for documents of any length.

A document that fits the model's window is summarized directly. A longer one is split into near-equal chunks,
each chunk is summarized, and the joined chunk summaries are summarized again, repeating until one input fits
(`--strategy truncate` instead cuts the document at the window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import PEGASUS, Task, TaskError, split_even
from .documents import Document
from .records import Record


class SummarizeTask(Task):
    name = "summarize"
    heads = {PEGASUS: "BigBirdPegasusForConditionalGeneration"}

    def __init__(
        self,
        model: str,
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model, **settings)
        defaults = self.generation_defaults()
        # Options left unset fall back to the checkpoint's own generation settings (as transformers does).
        self.generate_kwargs: dict[str, Any] = {
            "num_beams": num_beams or defaults["num_beams"] or 1,
            "length_penalty": length_penalty if length_penalty is not None else defaults["length_penalty"],
            "no_repeat_ngram_size": (
                no_repeat_ngram_size if no_repeat_ngram_size is not None else defaults["no_repeat_ngram_size"]
            ),
        }
        positions = int(self.config.max_position_embeddings)
        if max_new_tokens is not None and max_new_tokens > positions:
            raise TaskError(
                f"--max-new-tokens {max_new_tokens} is more than the {positions} positions {model}'s decoder has."
            )
        if max_new_tokens is not None:
            self.generate_kwargs["max_new_tokens"] = max_new_tokens
        else:
            self.generate_kwargs["max_length"] = defaults["max_length"]
        if min_new_tokens is not None:
            self.generate_kwargs["min_new_tokens"] = min_new_tokens
        else:
            self.generate_kwargs["min_length"] = defaults["min_length"]
        self.capacity = self.max_tokens - self.num_special

    def __call__(self, docs: list[Document]) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        # pieces[i]: the token windows document i still has to be summarized from; done when a single one is left.
        pieces: dict[int, list[np.ndarray]] = {}
        prepared: dict[int, tuple[int, bool, int]] = {}  # document → (input tokens, truncated, chunks)
        for i, doc in enumerate(docs):
            enc = self.encode(doc.text, self.capacity)
            if not len(enc.ids):
                records[i] = self.no_tokens(doc)
                continue
            windows, cut = self.windows(len(enc.ids), self.capacity)
            pieces[i] = [enc.ids[s:e] for s, e in windows]
            prepared[i] = (len(enc.ids), cut, len(windows))

        summaries: dict[int, str] = {}
        while len(summaries) < len(pieces):
            todo = [i for i in pieces if i not in summaries]
            jobs = [(i, piece) for i in todo for piece in pieces[i]]
            texts = self.summarize_ids([piece for _, piece in jobs], len(docs))
            for i in todo:
                parts = [text for (j, _), text in zip(jobs, texts, strict=True) if j == i]
                if len(parts) == 1:
                    summaries[i] = parts[0]
                    continue
                joined = self.encode("\n".join(parts)).ids
                windows = split_even(len(joined), self.capacity)
                if len(windows) >= len(pieces[i]):
                    # The summaries are no shorter than their inputs (a model that never stops early): cut the
                    # joined summaries at the window instead of looping forever.
                    windows = windows[:1]
                pieces[i] = [joined[s:e] for s, e in windows]

        for i, (input_tokens, cut, chunks) in prepared.items():
            records[i] = self.record(
                docs[i], input_tokens=input_tokens, truncated=cut, chunks=chunks, summary=summaries[i]
            )
        return records  # type: ignore[return-value]

    @torch.inference_mode()
    def summarize_ids(self, inputs: Sequence[Sequence[int]], size: int = 1) -> list[str]:
        """Generate one summary per token window (special tokens are added here), `size` windows at a time."""
        out: list[str] = [""] * len(inputs)
        for idx, ids, mask in self.batches((self.wrap(list(map(int, piece))) for piece in inputs), size):
            generated = self.model.generate(ids, attention_mask=mask, **self.generate_kwargs)
            texts = self.tokenizer.batch_decode(generated.tolist(), skip_special_tokens=True)
            for i, text in zip(idx, texts, strict=True):
                out[i] = text.strip()
        return out
