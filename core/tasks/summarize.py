"""Abstractive summarization with BigBirdPegasus, for documents of any length.

A document that fits the model's window is summarized directly. A longer one is split into near-equal chunks,
each chunk is summarized, and the joined chunk summaries are summarized again, repeating until one input fits
(`--strategy truncate` instead cuts the document at the window).

Sampling with a seed is reproducible per document: every generate input draws from its own generator, seeded
from the seed, the document id and the input's place in the document (see `SummarizeTask.draw_seed`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bigbird.models.generation import generate_each, resolve_generation_settings

from .base import NO_TOKENS, PEGASUS, Chunked, DocumentError, Plan, Task, TaskError, split_even
from .documents import Document
from .records import Record

# Options that only change sampled generation: given without it they do nothing, which the user should hear.
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "seed")


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
        repetition_penalty: float | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        num_return_sequences: int | None = None,
        seed: int | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model, **settings)
        given = {
            "num_beams": num_beams,
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
            "length_penalty": length_penalty,
            "no_repeat_ngram_size": no_repeat_ngram_size,
            "repetition_penalty": repetition_penalty,
            "do_sample": do_sample,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "num_return_sequences": num_return_sequences,
        }
        positions = int(self.config.max_position_embeddings)
        if max_new_tokens is not None and max_new_tokens > positions:
            raise TaskError(
                f"--max-new-tokens {max_new_tokens} is more than the {positions} positions {model}'s decoder has."
            )
        # Options left unset come from the checkpoint inside generate; resolved here too, to refuse impossible
        # settings before the first document and to report them (`generation`).
        self.generate_options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        try:
            self.generation = resolve_generation_settings(self.config, self.generate_options)
        except ValueError as exc:
            raise TaskError(f"summarize: {exc}.") from None
        # Only a --min-new-tokens the user gave: a checkpoint's own min_length past a shorter --max-new-tokens
        # just stops at the maximum, as in transformers.
        if min_new_tokens is not None and self.generation.min_length > self.generation.max_length:
            raise TaskError(
                f"summarize: --min-new-tokens {min_new_tokens} is more than the {self.generation.max_length - 1}"
                " new tokens the checkpoint's max_length allows; give --max-new-tokens too."
            )
        chosen = {**given, "seed": seed}
        sampling = [f"--{name.replace('_', '-')}" for name in SAMPLING_OPTIONS if chosen[name] is not None]
        if sampling and not self.generation.do_sample:
            verb = "applies" if len(sampling) == 1 else "apply"
            self.warnings.append(f"{', '.join(sampling)} only {verb} to sampling: add --do-sample.")
        self.seed = seed
        self.capacity = self.max_tokens - self.num_special

    def split(self, doc: Document) -> Chunked:
        """The document's ids, its windows, and whether text is cut (DocumentError: no tokens)."""
        ids = self.encode(doc.text, self.capacity).ids
        if not len(ids):
            raise DocumentError(NO_TOKENS)
        windows, cut = self.windows(len(ids), self.capacity)
        return Chunked(ids=ids, windows=windows, truncated=cut)

    def plan(self, doc: Document) -> Plan:
        chunked = self.split(doc)
        return Plan.of(len(chunked.ids), chunked.windows, chunked.truncated, self.num_special)

    def process(self, docs: list[Document], per_pass: int) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        # pieces[i]: the token windows document i still has to be summarized from; done when a single one is left.
        pieces: dict[int, list[np.ndarray]] = {}
        prepared: dict[int, tuple[int, bool, int]] = {}  # document → (input tokens, truncated, chunks)
        for i, chunked in self.split_each(docs, records).items():
            pieces[i] = [chunked.ids[s:e] for s, e in chunked.windows]
            prepared[i] = (len(chunked.ids), chunked.truncated, len(chunked.windows))

        summaries: dict[int, list[str]] = {}
        sparse: set[int] = set()  # documents any of whose inputs ran block-sparse attention
        rounds = 0
        while len(summaries) < len(pieces):
            todo = [i for i in pieces if i not in summaries]
            jobs = [(i, k, piece) for i in todo for k, piece in enumerate(pieces[i])]
            seeds = [self.draw_seed(docs[i].id, rounds, k) for i, k, _ in jobs] if self.seed is not None else None
            texts, ran = self.summarize_ids([piece for _, _, piece in jobs], per_pass, seeds)
            sparse.update(i for (i, _, _), attention in zip(jobs, ran, strict=True) if attention == "block_sparse")
            for i in todo:
                parts = [text for (j, _, _), text in zip(jobs, texts, strict=True) if j == i]
                if len(parts) == 1:
                    summaries[i] = parts[0]
                    continue
                # The next round reads the best summary of each piece.
                joined = self.encode("\n".join(part[0] for part in parts)).ids
                windows = split_even(len(joined), self.capacity)
                if len(windows) >= len(pieces[i]):
                    # The summaries are no shorter than their inputs (a model that never stops early): cut the
                    # joined summaries at one whole window instead of looping forever, and say the text was cut.
                    windows = [(0, min(len(joined), self.capacity))]
                    n, _, chunks = prepared[i]
                    prepared[i] = (n, True, chunks)
                pieces[i] = [joined[s:e] for s, e in windows]
            rounds += 1

        for i, (input_tokens, cut, chunks) in prepared.items():
            texts = summaries[i]
            fields: dict[str, Any] = {"summary": texts[0]}
            if self.generation.num_return_sequences > 1:
                fields["summaries"] = texts
            fields["attention"] = "block_sparse" if i in sparse else "original_full"
            records[i] = self.record(docs[i], input_tokens=input_tokens, truncated=cut, chunks=chunks, **fields)
        return records  # type: ignore[return-value]

    def draw_seed(self, doc_id: str, round_index: int, piece: int) -> int:
        """The seed of one generate input: a hash of --seed, the document id, the round (chunk summaries are
        round 0, summaries of joined summaries round 1, ...) and the piece's index in that round.

        Each input samples from its own generator seeded so, which makes a document's summary depend on the seed
        and the document alone: not on the batch size, the batch-mates or the order of the inputs.
        """
        key = f"{self.seed}\0{doc_id}\0{round_index}\0{piece}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1

    @torch.inference_mode()
    def summarize_ids(
        self, inputs: Sequence[Sequence[int]], per_pass: int = 1, seeds: list[int] | None = None
    ) -> tuple[list[list[str]], list[str]]:
        """The summaries (num_return_sequences of them) of each token window (special tokens are added here), and
        the encoder attention each window ran; with `seeds`, input i samples from a generator seeded with seeds[i].

        Each window is encoded alone (a `Task.batches` pass of one, whose `Pass.attention` is what its encoder ran)
        and decoded with up to `per_pass - 1` others (`generation.generate_each`: continuous batching, each input's
        tokens those it gets alone), so windows of any lengths share a batch and a record never depends on its
        batch-mates.
        """
        out: list[list[str]] = [[] for _ in inputs]
        ran: list[str] = []

        def each() -> Iterator[tuple[torch.Tensor, list[torch.Generator] | None]]:
            for step in self.batches((self.wrap(list(map(int, piece))) for piece in inputs), 1):
                [i] = step.indices
                ran.append(step.attention)
                generators = None if seeds is None else [torch.Generator(self.device).manual_seed(seeds[i])]
                yield step.input_ids, generators

        for i, generated in generate_each(self.model, each(), per_pass, **self.generate_options):
            texts = self.tokenizer.batch_decode(generated.tolist(), skip_special_tokens=True)
            out[i] = [text.strip() for text in texts]
        return out, ran
