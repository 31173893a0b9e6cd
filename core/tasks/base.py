"""What every task shares: loading a checkpoint's model and tokenizer, tokenizing with character offsets,
framing token windows with the tokenizer's special tokens, splitting long inputs, and batched forward passes.

A Task is a plain class: `__init__` loads, `__call__(documents) -> records`. Nothing here knows about the CLI,
so the same object works from Python, in the CLI's runner, or inside a distributed batch map.

Every record says which attention ran for its document (`attention`: block_sparse when any of the document's
inputs ran through the block-sparse encoder, which depends on its length alone: inputs are batched only with
others that run as they would alone, see `batches`) and `seconds`, the wall time of the batch it ran in shared
equally by the batch's documents (summarize, which decodes documents together, times each one's own share). A
dry run (`dry_run=True`) loads the config and tokenizer only, and reports how each document would be split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import torch

from bigbird.models.attention import runs_block_sparse
from bigbird.models.config import ModelConfig, apply_generation_config, load_config
from bigbird.models.modeling import available_device

from .documents import Document, describe
from .memory import available_memory
from .records import Record, error_record, make_record

if TYPE_CHECKING:
    from bigbird.models.tokenizers.pieces import Tokens

BIGBIRD, PEGASUS = "big_bird", "bigbird_pegasus"


class TaskError(Exception):
    """A task can't start (model missing or unreadable, wrong kind of checkpoint); the message is one sentence."""


# Characters tokenized at a time. Offsets cost far more memory than the text (hundreds of bytes a character
# while they are built), so a long document is tokenized piece by piece: memory follows the piece and the window,
# and `--strategy truncate` stops reading once the window is full.
PIECE_CHARS = 1 << 16

NO_TOKENS = "the document has no tokens (only whitespace, control or zero-width characters)."


def require_positive(**options: int | None) -> None:
    """TaskError for a count option under 1 (None is "not given"): from Python as from the CLI, 0 or -1 would
    otherwise slice results away or fail in the middle of a run."""
    for name, value in options.items():
        if value is not None and value < 1:
            raise TaskError(f"{name} must be at least 1, not {value}.")


class DocumentError(Exception):
    """One document can't be processed (no question, no mask token, no tokens); the message is the record's `error`.

    `input_tokens`: the document's token count when it is known, for the error record."""

    def __init__(self, reason: str, input_tokens: int | None = None) -> None:
        super().__init__(reason)
        self.input_tokens = input_tokens


@dataclass
class Plan:
    """How a document is fed to the model: its tokens, the inputs it is split into, and whether text is cut."""

    input_tokens: int
    chunks: int
    truncated: bool
    longest_input: int  # special tokens included

    @classmethod
    def of(cls, n: int, windows: Sequence[tuple[int, int]], truncated: bool, framing: int) -> Plan:
        """The plan of n tokens read in `windows`, each framed by `framing` more tokens (special, question)."""
        longest = max((e - s for s, e in windows), default=0) + framing
        return cls(input_tokens=n, chunks=len(windows), truncated=truncated, longest_input=longest)


@dataclass
class Encoding:
    """A text's tokens without special tokens, each with its (start, end) character span in the text.

    `complete` is False when tokenizing stopped early (`--strategy truncate` on a document longer than the
    window): then `ids` holds the tokens read, more than the window but not the whole document's count.
    """

    ids: np.ndarray
    offsets: np.ndarray
    complete: bool = True


def text_pieces(text: str, size: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) pieces of about `size` (PIECE_CHARS) characters, each cut just before a whitespace character
    where one is near, so the tokens on either side of the cut are those of the whole text."""
    size = size or PIECE_CHARS
    start = 0
    while start < len(text):
        end = start + size
        if end < len(text):
            cut = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
            end = cut if cut > start else end
        yield start, min(end, len(text))
        start = min(end, len(text))


def _joined(encoded: Sequence[Tokens], bounds: Sequence[tuple[int, int]], complete: bool) -> Encoding:
    """One Encoding of a text's consecutive pieces (the first len(encoded) of `bounds`), spans shifted into it."""
    if not encoded:
        return Encoding(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64))
    ids = np.fromiter(chain.from_iterable(tokens.ids for tokens in encoded), dtype=np.int64)
    spans = np.concatenate([tokens.offsets + start for tokens, (start, _) in zip(encoded, bounds, strict=False)])
    return Encoding(ids, spans, complete=complete)


def encode_document(tokenizer: Any, text: str, limit: int | None = None) -> Encoding:
    """A document's tokens without special tokens, each with its character span, tokenized piece by piece
    (`text_pieces`): how every task tokenizes a document, and what `bigbird bench --task tokenize` times.

    The pieces go to the tokenizer together, one call that all cores share. With a `limit` they go one at a time
    instead, and reading stops at the first piece that brings the count past it: a 20 MB document cut to one
    window costs one piece, not the document.
    """
    bounds = list(text_pieces(text))
    if limit is None:
        encoded = tokenizer.encode_texts([text[start:end] for start, end in bounds])
        return _joined(encoded, bounds, complete=True)
    encoded, count = [], 0
    for start, end in bounds:
        encoded += tokenizer.encode_texts([text[start:end]])
        count += len(encoded[-1])
        if count > limit and end < len(text):
            return _joined(encoded, bounds, complete=False)
    return _joined(encoded, bounds, complete=True)


def jobs_by_document(jobs: Sequence[tuple[Any, ...]]) -> dict[int, list[int]]:
    """The indices of each document's jobs (a job's first field is its document's index), in one pass."""
    rows: dict[int, list[int]] = {}
    for j, job in enumerate(jobs):
        rows.setdefault(job[0], []).append(j)
    return rows


def split_even(n: int, capacity: int) -> list[tuple[int, int]]:
    """Split n tokens into the fewest windows of at most `capacity`, all of near-equal length.

    Near-equal windows avoid a last chunk of a handful of tokens, which would weigh as much as a full one when
    chunk probabilities are averaged, and would make a poor summary input.
    """
    if n <= capacity:
        return [(0, n)]
    count = math.ceil(n / capacity)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def sliding_windows(n: int, capacity: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of `capacity` tokens stepping by `capacity - overlap` until one reaches n (that one may be shorter).

    The layout of a tokenizer's overflowing windows (`stride=overlap`), which the question-answering pipeline
    reads a long context in: the same windows give the same spans and scores."""
    step = max(1, capacity - overlap)
    windows = []
    for start in range(0, max(n, 1), step):
        windows.append((start, min(start + capacity, n)))
        if start + capacity >= n:
            break
    return windows


# The command that runs each kind of head, by the end of its class name (a checkpoint's `architectures`).
COMMANDS_BY_HEAD = {
    "ForQuestionAnswering": "qa",
    "ForSequenceClassification": "classify",
    "ForMaskedLM": "mask",
    "ForPreTraining": "mask",
    "ForConditionalGeneration": "summarize",
}


def command_for(architecture: str | None) -> str | None:
    """The `bigbird` command that runs a checkpoint of this architecture (None: none of ours)."""
    return next((cmd for head, cmd in COMMANDS_BY_HEAD.items() if architecture and architecture.endswith(head)), None)


def parameter_count(cls: type, config: ModelConfig) -> int:
    """The weights a config makes, counted on the meta device: shapes, no memory."""
    with torch.device("meta"):
        return sum(p.numel() for p in cls(config).parameters())


@dataclass(kw_only=True)
class Chunked:
    """A document as a task cuts it for the model (`Task.split`): its token ids, the (start, end) token windows the
    model reads (one forward input each), and whether text is cut (`--strategy truncate`). A task that needs more
    (qa's question, classify's text pair, mask's masks per window) adds it in a subclass."""

    ids: Any  # the document's token ids, as the task reads them (an array, or a list)
    windows: list[tuple[int, int]]
    truncated: bool


class Pass(NamedTuple):
    """One forward pass of `Task.batches`: the indices of its sequences, their padded ids and mask on the model's
    device, and the encoder attention the pass runs (`block_sparse` or `original_full`)."""

    indices: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    attention: str


def attention_of(ran: Sequence[str], inputs: Sequence[int]) -> str:
    """The attention a document ran: block_sparse when any of its inputs did. `ran` holds each sequence's attention
    as its pass ran it (`Pass.attention`), `inputs` the document's sequence indices."""
    return "block_sparse" if any(ran[j] == "block_sparse" for j in inputs) else "original_full"


class Task:
    """Base of the four tasks: load the checkpoint in `__init__`, turn documents into records in `__call__`.

    Every task takes these settings beside its own: `model` (a Hub id or a folder), `revision` (a Hub branch, tag
    or commit), `device` ("cpu", "cuda", ...), `dtype` ("float32", "bfloat16", "float16"; default the
    checkpoint's float32), `quantize` ("int8": the linear layers in int8, faster on CPUs, approximate),
    `strategy` ("chunk": a document longer than the window is read window by window; "truncate": its first
    window only) and `dry_run` (load the config and tokenizer only; records say how each document would be split).

    `task(documents, per_pass)` gives one record per Document, in order: a dict with the id, source, model, token
    count, whether text was cut, the chunks read and the task's fields, or an `error` for a document that could
    not be processed. Subclasses name the model class to use for each kind of checkpoint in `heads`
    (model_type → class name).
    """

    name: ClassVar[str] = ""
    heads: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        quantize: str | None = None,
        strategy: str = "chunk",
        dry_run: bool = False,
    ) -> None:
        if strategy not in ("chunk", "truncate"):
            raise ValueError(f"strategy must be 'chunk' or 'truncate', not {strategy!r}")
        self.model_name = str(model)
        # What a user should hear about the options before the run (the CLI prints them): an option that has no
        # effect with the others given, for example.
        self.warnings: list[str] = []
        try:
            self.device = available_device(device, "--device")
        except ValueError as exc:
            raise TaskError(str(exc)) from None
        self.strategy = strategy
        self.dry_run = dry_run
        self.path, self.config = self._resolve(model, revision)
        self.model_type: str = self.config.model_type
        # The tokenizer first: one that doesn't belong to the model is refused before the weights are read.
        self.tokenizer = self._load_tokenizer()
        self.model = None if dry_run else self._load_model(dtype)
        if quantize is not None and not dry_run:
            self._quantize(quantize, dtype)
        # Longest input the model takes, special tokens included.
        self.max_tokens = int(self.config.max_position_embeddings)
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < self.max_tokens:
            self.max_tokens = limit

    # Loading -----------------------------------------------------------------------------------------------

    def _resolve(self, model: str, revision: str | None) -> tuple[Path, ModelConfig]:
        from bigbird.models.checkpoints import CONFIG_FILES, TOKENIZER_FILES, CheckpointError, resolve_checkpoint

        # A dry run reads the config and the tokenizer only: a Hub id's weights (gigabytes) are not fetched for it.
        files = CONFIG_FILES + TOKENIZER_FILES if self.dry_run else None
        try:
            path = resolve_checkpoint(model, revision=revision, allow_patterns=files)
        except CheckpointError as exc:
            raise TaskError(str(exc)) from None
        if not (path / "config.json").is_file():
            raise TaskError(f"{model} has no config.json, so it is not a checkpoint this tool can read.")
        try:
            config = apply_generation_config(load_config(path), path)
        except (ValueError, OSError) as exc:
            raise TaskError(f"{model}: config.json can't be used ({describe(exc)}).") from None
        if config.model_type not in self.heads:
            kinds = " or ".join("BigBird" if f == BIGBIRD else "BigBirdPegasus" for f in self.heads)
            raise TaskError(f"{self.name} needs a {kinds} checkpoint, and {model} is a {config.model_type} model.")
        # A task reads the outputs it needs by name; a checkpoint saved asking for every layer's states (or for
        # tuples) would only cost memory, or break every record.
        config.output_hidden_states = config.output_attentions = False
        config.return_dict = True
        return path, config

    def _load_model(self, dtype: str | None) -> torch.nn.Module:
        from bigbird.models.architectures import model_class

        cls = model_class(self.heads[self.model_type])
        try:
            return cls.from_pretrained(self.path, device=self.device, dtype=dtype, config=self.config, strict=True)
        except Exception as exc:  # weights missing, of the wrong shape, or unreadable: one sentence, no traceback
            raise TaskError(self._load_failure(cls, exc, dtype)) from None

    def _load_failure(self, cls: type, exc: Exception, dtype: str | None) -> str:
        """Why the model could not be built, in the user's terms: a checkpoint of another command's head (whose
        missing weight's name said nothing), weights larger than the machine's memory (torch's allocator text
        said bytes of one tensor), else the loader's own reason."""
        architecture = next(iter(self.config.architectures or []), None)
        command = command_for(architecture)
        if architecture and architecture != cls.__name__ and command and command != self.name:
            return (
                f"{self.model_name} is a {architecture} checkpoint, which `bigbird {command}` runs; {self.name} needs"
                f" a {cls.__name__} checkpoint."
            )
        if isinstance(exc, MemoryError) or "allocate" in str(exc):
            count = parameter_count(cls, self.config)
            size = getattr(torch, dtype or "float32").itemsize
            available = available_memory()
            has = "" if available is None else f", and this machine has {available / 2**30:,.1f} GiB available"
            return (
                f"{self.model_name}: its config needs {count * size / 2**30:,.1f} GiB for its {count:,} weights in"
                f" {dtype or 'float32'}{has}."
            )
        return f"{self.model_name}: the {cls.__name__} weights can't be loaded ({describe(exc)})."

    def _quantize(self, kind: str, dtype: str | None) -> None:
        from bigbird.models.linear import quantize_int8

        if kind != "int8":
            raise TaskError(f"--quantize takes int8, not {kind!r}.")
        if self.device.type != "cpu" or dtype not in (None, "float32"):
            raise TaskError("--quantize int8 runs on the CPU from float32 weights: drop --device or --dtype.")
        try:
            quantize_int8(self.model, inplace=True, keep_float=False)  # a task only infers: a quarter the memory
        except RuntimeError as exc:  # no working int8 kernel in this torch (or BIGBIRD_PRIVATE_OPS=0)
            raise TaskError(f"{exc}.") from None

    def _load_tokenizer(self) -> Any:
        """The checkpoint's tokenizer (spiece.model, else tokenizer.json), refused when it doesn't fit the model
        (ids past the embeddings, or special tokens elsewhere than config.json says, would fail or garble every
        document)."""
        from bigbird.models.tokenizers import TokenizerMismatch, config_mismatch, load_tokenizer

        try:
            tokenizer = load_tokenizer(self.path, self.model_type)
        except TokenizerMismatch as exc:
            raise TaskError(str(exc).replace(str(self.path), self.model_name, 1)) from None
        except Exception as exc:
            raise TaskError(f"{self.model_name}: the tokenizer can't be loaded ({describe(exc)}).") from None
        problem = config_mismatch(tokenizer, self.config)
        if problem:
            raise TaskError(f"{self.model_name}: {problem}")
        return tokenizer

    # Tokens -------------------------------------------------------------------------------------------------

    def encode(self, text: str, capacity: int | None = None) -> Encoding:
        """Tokenize without special tokens, keeping each token's character span, piece by piece
        (`encode_document`); under `--strategy truncate`, reading stops once `capacity` tokens are read."""
        limit = capacity if capacity is not None and self.strategy == "truncate" else None
        return encode_document(self.tokenizer, text, limit)

    @property
    def num_special(self) -> int:
        """Special tokens the tokenizer frames one text with."""
        return self.tokenizer.num_special_tokens_to_add()

    def wrap(self, ids: Sequence[int], pair: Sequence[int] | None = None) -> list[int]:
        """One text, or a (first, second) pair, framed with the tokenizer's special tokens."""
        return self.tokenizer.build_inputs_with_special_tokens(list(ids), None if pair is None else list(pair))

    def windows(self, n: int, capacity: int, overlap: int | None = None) -> tuple[list[tuple[int, int]], bool]:
        """Windows over n tokens under the strategy (near-equal chunks, or sliding ones when `overlap` is given,
        0 included), and whether text was cut off."""
        if self.strategy == "truncate" or n <= capacity:
            return [(0, min(n, capacity))], n > capacity
        return (split_even(n, capacity) if overlap is None else sliding_windows(n, capacity, overlap)), False

    def batches(self, sequences: Iterable[Sequence[int]], per_pass: int) -> Iterator[Pass]:
        """Forward passes of at most `per_pass` sequences, in order, each with the attention it runs. Sequences are
        consumed lazily, so a document of many windows is never held wrapped whole.

        `per_pass` is the runner's `--batch-size`, handed down through `__call__`: it bounds the windows of one
        forward pass, so one long document's chunks go `per_pass` at a time. Which documents go together, and
        sorting them by length, is the runner's decision alone; a task keeps no batch size and sorts nothing.

        A pass only holds sequences that run as they would alone (`alone_shape`): padded into a wider batch, a
        short input would switch to block-sparse attention, and a block-sparse one would get another random-block
        plan, so its record would depend on its batch-mates and on --batch-size.
        """
        batch: list[tuple[int, Sequence[int]]] = []
        for i, seq in enumerate(sequences):
            if batch and (len(batch) >= per_pass or self.alone_shape(len(seq)) != self.alone_shape(len(batch[0][1]))):
                yield self._pass(batch)
                batch = []
            batch.append((i, seq))
        if batch:
            yield self._pass(batch)

    def _pass(self, batch: list[tuple[int, Sequence[int]]]) -> Pass:
        width = max(len(seq) for _, seq in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, seq) in enumerate(batch):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return Pass([i for i, _ in batch], ids.to(self.device), mask.to(self.device), self.attention_for(width))

    def alone_shape(self, length: int) -> int:
        """What decides how an input of `length` tokens runs: 0 for full attention (any padding leaves it exact),
        else its width in blocks (block-sparse attention pads to whole blocks, and its random-block plan depends on
        how many there are)."""
        if self.attention_for(length) == "original_full":
            return 0
        return -(-length // self.config.block_size)

    def attention_for(self, width: int) -> str:
        """The encoder attention an input batch of this width runs: short ones fall back to full attention."""
        return "block_sparse" if runs_block_sparse(self.config, width) else "original_full"

    # Records ------------------------------------------------------------------------------------------------

    def record(self, doc: Document, *, input_tokens: int, truncated: bool, chunks: int, **fields: Any) -> Record:
        return make_record(
            doc, self.model_name, input_tokens=input_tokens, truncated=truncated, chunks=chunks, **fields
        )

    def error(self, doc: Document, reason: str, *, input_tokens: int | None = None) -> Record:
        return error_record(doc, self.model_name, reason, input_tokens=input_tokens)

    def default_batch_size(self) -> int:
        """Documents per batch when the user names none (the CLI's --batch-size): one, unless a task's batches are
        worth their memory and never change a record (summarize's)."""
        return 1

    def __call__(self, docs: list[Document], per_pass: int | None = None) -> list[Record]:
        """Records for a batch of documents, each with its share of the batch's wall time (`seconds`).

        `per_pass`: the most input windows per forward pass (the runner passes `--batch-size`) [default: as many as
        documents given]."""
        docs = documents_given(docs)
        readable = [doc for doc in docs if doc.error is None]  # one that could not be read is its error record
        if self.dry_run:
            made = [self.dry_record(doc) for doc in readable]
        else:
            start = time.perf_counter()
            made = self.process(readable, max(1, per_pass or len(readable))) if readable else []
            seconds = round((time.perf_counter() - start) / max(1, len(readable)), 6)
            for record in made:
                if "error" not in record:
                    record.setdefault("seconds", seconds)  # a task that times each document (summarize) says so
        done = iter(made)
        return [next(done) if doc.error is None else self.error(doc, doc.error) for doc in docs]

    def process(self, docs: list[Document], per_pass: int) -> list[Record]:
        """The task proper: documents → records (one each, in order), at most `per_pass` windows a forward pass."""
        raise NotImplementedError

    # Whether `stream` keeps up to `per_pass` inputs in flight across all the documents it is given and yields
    # each record when it is done (summarize's continuous batching): the runner then hands it a whole read-ahead
    # bucket at once, instead of batches it would drain at each one's end.
    streams: ClassVar[bool] = False

    def stream(self, docs: list[Document], per_pass: int | None = None) -> Iterator[tuple[int, Record]]:
        """(index in `docs`, record) pairs as records are done; here all together, after `__call__`."""
        yield from enumerate(self(docs, per_pass))

    def split(self, doc: Document) -> Chunked:
        """How the task cuts one document for the model (DocumentError when it can't be processed at all)."""
        raise NotImplementedError

    def split_each(self, docs: list[Document], records: list[Record | None]) -> dict[int, Any]:
        """`split` of every document, by its index; one that can't be split gets its error record in `records`."""
        done = {}
        for i, doc in enumerate(docs):
            try:
                done[i] = self.split(doc)
            except DocumentError as exc:
                records[i] = self.error(doc, str(exc), input_tokens=exc.input_tokens)
        return done

    def plan(self, doc: Document) -> Plan:
        """How the document would be split (DocumentError when it can't be processed at all)."""
        raise NotImplementedError

    def dry_record(self, doc: Document) -> Record:
        """What a dry run reports: the plan, and the attention the longest input would run alone."""
        try:
            plan = self.plan(doc)
        except DocumentError as exc:
            return self.error(doc, str(exc))
        return self.record(
            doc,
            input_tokens=plan.input_tokens,
            truncated=plan.truncated,
            chunks=plan.chunks,
            attention=self.attention_for(plan.longest_input),
            tokenizer=self.tokenizer.source,
            dry_run=True,
        )


def documents_given(docs: Iterable[Document]) -> list[Document]:
    """A Task's documents as a list, or a TypeError in one sentence: a string, a single Document or anything else
    went deep into a task before failing on a missing attribute."""
    if isinstance(docs, Document):
        raise TypeError("a Task takes a list of Documents, not one Document: call task([document])")
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Iterable):
        raise TypeError(f"a Task takes a list of Documents, not {type(docs).__name__}: Document(id, source, text)")
    docs = list(docs)
    other = next((doc for doc in docs if not isinstance(doc, Document)), None)
    if other is not None:
        raise TypeError(f"a Task takes a list of Documents, not of {type(other).__name__}: Document(id, source, text)")
    return docs
