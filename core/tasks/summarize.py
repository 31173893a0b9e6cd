"""Abstractive summarization with BigBirdPegasus, for documents of any length.

A document that fits the model's window is summarized directly. A longer one is split into near-equal chunks,
each chunk is summarized, and the joined chunk summaries are summarized again, repeating until one input fits
(`--strategy truncate` instead cuts the document at the window).

Sampling with a seed is reproducible per document: every generate input draws from its own generator, seeded
from the seed, the document id and the input's place in the document (see `SummarizeTask.draw_seed`).
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bigbird.models.generation import generate_each, resolve_generation_settings

from .base import NO_TOKENS, PEGASUS, Chunked, DocumentError, Plan, Task, TaskError, documents_given, split_even
from .documents import Document
from .memory import available_memory
from .records import Record

# The most inputs decoded together when the user names no batch size: batch 8 gained over batch 1 on both CPU
# families measured (a folder of 1,500-4,000-token papers: 1.30-1.39x on an AMD EPYC, 1.40-1.46x on an Intel Xeon
# with AMX, the same records), and each input in flight holds its own keys/values.
MOST_BY_DEFAULT = 8
# The share of the memory available at start that the inputs in flight may take by default: the rest is for the
# encoder's working memory (one input at a time) and for the rest of the machine.
MEMORY_SHARE_BY_DEFAULT = 0.5

# Options that only change sampled generation: given without it they do nothing, which the user should hear.
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "seed")


class SummarizeTask(Task):
    """Abstractive summaries with a BigBirdPegasus checkpoint: records with `summary` (and `summaries` with several
    return sequences). A long document is summarized window by window, then the joined summaries again; documents
    are decoded together up to `per_pass` at a time, each getting the tokens it gets alone. Generation options
    (`num_beams`, `max_new_tokens`, `do_sample`, `seed`, ...) go over the checkpoint's own settings."""

    name = "summarize"
    heads = {PEGASUS: "BigBirdPegasusForConditionalGeneration"}
    streams = True

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

    def default_batch_size(self) -> int:
        """Inputs decoded together when the user names no batch size. On the CPU a record is the same at any batch
        size (`generate_each`), so: as many as `MEMORY_SHARE_BY_DEFAULT` of the memory available now holds with
        every input at its largest (`memory_per_input`), from 1 to `MOST_BY_DEFAULT`. One elsewhere, where
        batched matmuls may round an input differently, in a dry run (no model), and where the free memory can't be
        told."""
        if self.model is None or self.device.type != "cpu":
            return 1
        available = available_memory()
        if available is None:
            return 1
        fits = int(available * MEMORY_SHARE_BY_DEFAULT) // self.memory_per_input()
        return max(1, min(MOST_BY_DEFAULT, fits))

    def memory_per_input(self) -> int:
        """Bytes one input in flight holds at most: its encoder states and its cross-attention keys/values at a
        full window (in the model's type), and its rows' self-attention cache at the longest summary (held in
        float32 on the CPU: `generation.DecoderCache`)."""
        assert self.model is not None
        width, layers = int(self.config.d_model), int(self.config.decoder_layers)
        kept = self.model.dtype.itemsize
        encoded = self.max_tokens * width * kept
        cross = layers * 2 * self.max_tokens * width * kept
        cache = self.generation.rows_per_input * layers * 2 * self.generation.max_length * width * 4
        return encoded + cross + cache

    def process(self, docs: list[Document], per_pass: int) -> list[Record]:
        records: list[Record | None] = [None] * len(docs)
        for i, record in self.summaries_as_done(docs, per_pass):
            records[i] = record
        return records  # type: ignore[return-value]

    def stream(self, docs: list[Document], per_pass: int | None = None) -> Iterator[tuple[int, Record]]:
        """Records as documents are done (see `summaries_as_done`)."""
        docs = documents_given(docs)
        if self.dry_run:
            yield from super().stream(docs, per_pass)
            return
        yield from self.summaries_as_done(docs, max(1, per_pass or len(docs)))

    @torch.inference_mode()
    def summaries_as_done(self, docs: list[Document], per_pass: int) -> Iterator[tuple[int, Record]]:
        """(index, record) of every document as its summary is done, all the documents' inputs decoded up to
        `per_pass` at a time (`generation.generate_each`): a document's chunk summaries, joined, become its inputs
        of the next round as soon as they are all done, and the first documents' inputs go first.

        Each input is encoded alone (a `Task.batches` pass of one, whose `Pass.attention` is what its encoder
        ran) and decoded beside others of any lengths, each getting the tokens it gets alone, so a record never
        depends on its batch-mates; with --seed, input k of round r of a document samples from a generator seeded
        by `draw_seed`.

        A record's `seconds` is its document's share of the time: its tokenizing, each of its inputs' share of
        the decoding steps it rode in (`generate_each`) and the making of its next rounds and record, so that
        documents finishing in the same step each show their own cost, and the records of a call add up to its time.
        """
        progress: dict[int, _Progress] = {}
        for i, doc in enumerate(docs):
            if doc.error is not None:  # it could not be read
                yield i, self.error(doc, doc.error)
                continue
            started = time.perf_counter()
            try:
                chunked = self.split(doc)
            except DocumentError as exc:
                yield i, self.error(doc, str(exc), input_tokens=exc.input_tokens)
                continue
            pieces = [chunked.ids[a:b] for a, b in chunked.windows]
            progress[i] = _Progress(pieces, len(chunked.ids), chunked.truncated, len(chunked.windows))
            progress[i].seconds = time.perf_counter() - started
        waiting = [(i, 0, k) for i in progress for k in range(len(progress[i].pieces))]  # a heap: (doc, round, k)
        given: list[tuple[int, int]] = []  # generate input → (document, piece)

        def inputs() -> Iterator[tuple[torch.Tensor, list[torch.Generator] | None] | None]:
            while progress:
                if not waiting:
                    yield None  # the next inputs are summaries still being made
                    continue
                i, round_index, k = heapq.heappop(waiting)
                [step] = self.batches([self.wrap(list(map(int, progress[i].pieces[k])))], 1)
                progress[i].sparse |= step.attention == "block_sparse"
                seed = None if self.seed is None else self.draw_seed(docs[i].id, round_index, k)
                given.append((i, k))
                yield step.input_ids, None if seed is None else [torch.Generator(self.device).manual_seed(seed)]

        for n, generated, seconds in generate_each(self.model, inputs(), per_pass, **self.generate_options):
            started = time.perf_counter()
            i, k = given[n]
            doc = progress[i]
            texts = self.tokenizer.batch_decode(generated.tolist(), skip_special_tokens=True)
            doc.parts[k] = [text.strip() for text in texts]
            if len(doc.parts) == len(doc.pieces) == 1:  # its summary
                del progress[i]
                record = self._record(docs[i], doc)
                record["seconds"] = round(doc.seconds + seconds + time.perf_counter() - started, 6)
                yield i, record
                continue
            if len(doc.parts) == len(doc.pieces):  # its chunk summaries: the next round's inputs
                self._next_round(doc)
                for k in range(len(doc.pieces)):
                    heapq.heappush(waiting, (i, doc.round, k))
            doc.seconds += seconds + time.perf_counter() - started

    def _next_round(self, doc: _Progress) -> None:
        """A document's next inputs: its best chunk summaries, joined and cut into windows again."""
        joined = self.encode("\n".join(doc.parts[k][0] for k in range(len(doc.pieces)))).ids
        windows = split_even(len(joined), self.capacity)
        if len(windows) >= len(doc.pieces):
            # The summaries are no shorter than their inputs (a model that never stops early): cut the joined
            # summaries at one whole window instead of looping forever, and say the text was cut.
            windows = [(0, min(len(joined), self.capacity))]
            doc.truncated = True
        doc.pieces = [joined[a:b] for a, b in windows]
        doc.parts = {}
        doc.round += 1

    def _record(self, doc: Document, done: _Progress) -> Record:
        texts = done.parts[0]
        fields: dict[str, Any] = {"summary": texts[0]}
        if self.generation.num_return_sequences > 1:
            fields["summaries"] = texts
        fields["attention"] = "block_sparse" if done.sparse else "original_full"
        return self.record(doc, input_tokens=done.input_tokens, truncated=done.truncated, chunks=done.chunks, **fields)

    def draw_seed(self, doc_id: str, round_index: int, piece: int) -> int:
        """The seed of one generate input: a hash of --seed, the document id, the round (chunk summaries are
        round 0, summaries of joined summaries round 1, ...) and the piece's index in that round.

        Each input samples from its own generator seeded so, which makes a document's summary depend on the seed
        and the document alone: not on the batch size, the batch-mates or the order of the inputs.
        """
        key = f"{self.seed}\0{doc_id}\0{round_index}\0{piece}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


@dataclass
class _Progress:
    """Where one document's summary stands: the token windows of its current round and the summaries of those
    done (by window), with what its record reports."""

    pieces: list[np.ndarray]
    input_tokens: int
    truncated: bool
    chunks: int
    parts: dict[int, list[str]] = field(default_factory=dict)
    round: int = 0
    sparse: bool = False  # whether any of its inputs ran block-sparse attention
    seconds: float = 0.0  # its share of the time so far (see SummarizeTask.summaries_as_done)
