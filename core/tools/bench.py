"""`bigbird bench`: the instrument behind every speed claim of this project.

A run is a grid of rows (sequence length × batch size × attention type). With `mixed` (summarize only) the
sequence lengths are instead the documents of one mixed-length batch, and each batch size is a row: the main
job, summarized as `bigbird summarize` runs it (each document encoded alone, up to `batch size` of them decoded
together), in seconds and documents per hour, beside the same documents at batch size 1 in the same row.
For each row every implementation
under test (ours; with `compare="transformers"` the same weights in transformers; with `quantize="int8"` our
fp32 model as the baseline) gets warm-up calls, then `repeat` timed calls, interleaved call by call so that
whatever else the machine does hits all of them alike. Each row yields one JSON-ready record.

Memory is measured per implementation and row, not per process: on Linux the resident high-water mark
(VmHWM) is reset through /proc/self/clear_refs before each timed call, so the peak belongs to that call (it
still includes everything resident, its weights among them; `mem_base_bytes` is what was resident before the
call). Tensors only the other implementations hold are left out of both, so each reads as if it ran alone.
Where the reset is not allowed, the process-wide ru_maxrss is reported and `mem_scope` says so. On CUDA it is
`torch.cuda.max_memory_allocated` after a reset of the peak statistics.

transformers is not a dependency: it is imported lazily, only on the `compare="transformers"` path.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import importlib.util
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bigbird.models import cpu, kernels
from bigbird.models.config import ATTENTION_TYPES, ModelConfig
from bigbird.models.generation import generate_each
from bigbird.models.heap import release_free_heap, reuse_large_blocks
from bigbird.models.linear import quantize_int8
from bigbird.models.modeling import available_device
from bigbird.models.presets import PRESETS, config_from_name

TASKS = ("encode", "summarize", "train", "tokenize")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# First token id used for random inputs: keeps clear of pad/bos/eos/unk.
FIRST_ORDINARY_ID = 5


class BenchError(Exception):
    """A benchmark that can't run as asked; the message is one sentence for the user."""


@dataclass
class BenchSpec:
    """What to measure. Exactly one of `preset` and `model` names the weights."""

    preset: str | None = "bigbird-roberta-base"
    model: str | None = None
    revision: str | None = None
    task: str = "encode"
    seq_lens: list[int] | None = None  # None: the DEFAULT_SEQ_LENS the model's positions allow (set in _measure)
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    attentions: list[str] = field(default_factory=lambda: ["block_sparse"])
    threads: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    repeat: int = 3
    warmup: int = 1
    num_beams: int = 5
    new_tokens: int | None = None  # the checkpoint's own max_length (less the start token)
    mixed: bool = False
    compare: str | None = None
    quantize: str | None = None
    seed: int = 0
    text: str | None = None  # --task tokenize: the file whose text is tokenized

    def check(self) -> None:
        """Refuse an impossible spec before any model is built (building a large one takes a while)."""
        self._check_names()
        self._check_tokenize()
        lengths = self.seq_lens if self.seq_lens is not None else DEFAULT_SEQ_LENS  # None: the defaults, positive
        if not lengths or min(lengths) < 1 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchError("sequence lengths and batch sizes must be positive.")
        if self.repeat < 1 or self.warmup < 0:
            raise BenchError("--repeat must be at least 1 and the warm-up count can't be negative.")
        if self.task == "summarize" and (self.num_beams < 1 or (self.new_tokens is not None and self.new_tokens < 1)):
            raise BenchError("--num-beams and --new-tokens must be at least 1.")
        if self.mixed and self.task != "summarize":
            raise BenchError("--mixed measures a batch of documents of mixed lengths: it needs --task summarize.")
        if self.mixed and self.quantize:
            raise BenchError("--mixed compares batch sizes of the float model: leave out --quantize.")
        if self.compare not in (None, "transformers"):
            raise BenchError(f"--compare takes 'transformers', not {self.compare!r}.")
        if self.compare == "transformers" and importlib.util.find_spec("transformers") is None:
            raise BenchError("--compare transformers needs the transformers package (pip install transformers).")
        if self.quantize not in (None, "int8"):
            raise BenchError(f"--quantize takes 'int8', not {self.quantize!r}.")
        if self.quantize and (self.device != "cpu" or self.dtype != "float32"):
            raise BenchError("--quantize int8 runs on the CPU from float32 weights only.")
        try:
            available_device(self.device, "--device")
        except ValueError as exc:
            raise BenchError(str(exc)) from None

    def _check_tokenize(self) -> None:
        """--task tokenize times a checkpoint's tokenizer on --text: it needs both, and takes none of the model's
        options; --text is for it alone."""
        if self.task != "tokenize":
            if self.text is not None:
                raise BenchError("--text is the text --task tokenize tokenizes; the other tasks run on random ids.")
            return
        if self.model is None:
            raise BenchError("--task tokenize times a checkpoint's tokenizer, and a preset has none: use --model.")
        if self.text is None:
            raise BenchError("--task tokenize needs --text FILE, the text to tokenize.")
        model_options = {
            "--seq-lens": self.seq_lens is not None,
            "--batch-sizes": self.batch_sizes != [1],
            "--attention": self.attentions != ["block_sparse"],
            "--device": self.device != "cpu",
            "--dtype": self.dtype != "float32",
            "--num-beams": self.num_beams != 5,
            "--new-tokens": self.new_tokens is not None,
            "--mixed": self.mixed,
            "--compare": self.compare is not None,
            "--quantize": self.quantize is not None,
        }
        given = [option for option, set_ in model_options.items() if set_]
        if given:
            verb = "does" if len(given) == 1 else "do"
            raise BenchError(f"{', '.join(given)} {verb} not apply to --task tokenize: it times the tokenizer alone.")

    def _check_names(self) -> None:
        """The weights, the task, the attentions and the dtype each name one that exists."""
        if (self.preset is None) == (self.model is None):
            raise BenchError("name the weights with exactly one of --preset and --model.")
        if self.preset is not None and self.preset not in PRESETS:
            raise BenchError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}.")
        if self.task not in TASKS:
            raise BenchError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}.")
        if not self.attentions:
            raise BenchError(f"--attention names no attention; use one or more of {', '.join(ATTENTION_TYPES)}.")
        for kind in self.attentions:
            if kind not in ATTENTION_TYPES:
                raise BenchError(f"unknown attention {kind!r}; use one of {', '.join(ATTENTION_TYPES)}.")
        if self.dtype not in DTYPES:
            raise BenchError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}.")


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------
class MemoryMeter:
    """Peak memory of one call: resettable VmHWM on Linux, ru_maxrss elsewhere, CUDA allocator peak on GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.scope = "cuda_max_memory_allocated"
        elif self._can_reset_hwm():
            self.scope = "rss_hwm_per_call"
        else:
            self.scope = "rss_max_process"

    @staticmethod
    def _can_reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return _status_kb("VmHWM") is not None
        except OSError:
            return False

    def current(self) -> int:
        """Bytes in use now (resident set, or allocated on the GPU)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        rss = _status_kb("VmRSS")
        return rss * 1024 if rss is not None else 0

    def reset(self) -> None:
        """Start a new measurement. On the CPU, free heap pages go back to the OS first: otherwise what an
        earlier, larger call left in the allocator's free lists would count as resident in every later call."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _release_free_heap()
        if self.scope == "rss_hwm_per_call":
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")

    def peak(self) -> int:
        """Bytes at the high-water mark since the last reset (since process start for `rss_max_process`)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.scope == "rss_hwm_per_call":
            return (_status_kb("VmHWM") or 0) * 1024
        # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return usage if sys.platform == "darwin" else usage * 1024


def _release_free_heap() -> None:
    gc.collect()
    release_free_heap()


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------------------
# Models under test
# --------------------------------------------------------------------------------------------------
@dataclass
class Contender:
    """One implementation under test: `run(input_ids, attention_mask)` does the work of a row once."""

    name: str
    run: Callable[[torch.Tensor, torch.Tensor], Any]
    set_attention: Callable[[str], None]
    model: nn.Module  # what it holds in memory


def held_bytes(model: nn.Module) -> dict[int, int]:
    """Bytes of the parameters and buffers `model` holds, by storage: tensors sharing memory count once. Packed
    oneDNN weights (Linear.pack) have no storage and count by identity; so do int8 layers' weights, one byte
    per weight for their int8 values and for each kernel's packing of them (opaque objects)."""
    held: dict[int, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_meta:  # an int8 layer's dropped float weight: a shape, no memory
            continue
        if tensor.is_mkldnn:
            held[id(tensor)] = tensor.numel() * tensor.element_size()
        else:
            storage = tensor.untyped_storage()
            held[storage.data_ptr()] = storage.nbytes()
    for module in model.modules():
        int8 = getattr(module, "int8", None)
        if int8 is not None:
            copies = len(int8.packed) + (int8.values is not None)
            held[id(int8)] = copies * module.in_features * module.out_features
    return held


def others_bytes(contenders: list[Contender], name: str) -> int:
    """Memory held only by the contenders other than `name`: left out of `name`'s peak, as if it ran alone.

    They share one copy of the weights, but not always: our layers may repack theirs (one copy for us) while
    transformers keeps the plain tensors, and an int8 model is a copy of the float one.
    """
    own = held_bytes(next(c.model for c in contenders if c.name == name))
    others: dict[int, int] = {}
    for contender in contenders:
        if contender.name != name:
            others |= held_bytes(contender.model)
    return sum(size for key, size in others.items() if key not in own)


def build_config(spec: BenchSpec) -> ModelConfig:
    if spec.preset is not None:
        return config_from_name(spec.preset)
    from bigbird.models.checkpoints import resolve_checkpoint
    from bigbird.models.config import load_config

    return load_config(resolve_checkpoint(spec.model, revision=spec.revision))


def tokenizer_source(spec: BenchSpec) -> str | None:
    """The file a checkpoint's tokenizer reads its ids from (spiece.model, else tokenizer.json); None for a preset."""
    if spec.preset is not None:
        return None
    from bigbird.models.checkpoints import resolve_checkpoint
    from bigbird.models.tokenizers import tokenizer_file

    return tokenizer_file(resolve_checkpoint(spec.model, revision=spec.revision))


def build_model(spec: BenchSpec, config: ModelConfig, dtype: str | None = None) -> nn.Module:
    """Our model in `dtype` (the spec's by default): the model type's default class (architectures.DEFAULT_CLASS),
    which is BigBird's base model or the full Pegasus model (its encoder serves `encode`)."""
    from bigbird.models.architectures import DEFAULT_CLASS, model_class

    if spec.task == "summarize" and config.model_type != "bigbird_pegasus":
        raise BenchError("--task summarize needs a BigBirdPegasus model (e.g. --preset bigbird-pegasus-large).")
    cls = model_class(DEFAULT_CLASS[config.model_type])
    named = config.architectures or []
    if spec.preset is None and config.model_type == "bigbird_pegasus" and named and cls.__name__ not in named:
        # A Pegasus head without the LM head bench loads: a missing-weight error would not say why.
        raise BenchError(f"bench runs {cls.__name__} checkpoints, and {spec.model} is a {named[0]} one.")
    if spec.preset is not None:
        torch.manual_seed(spec.seed)
        model = cls(config)
    else:
        model = cls.from_pretrained(spec.model, revision=spec.revision, config=config, strict=True)
    return model.to(device=spec.device, dtype=DTYPES[dtype or spec.dtype]).eval()


def _our_contender(name: str, model: nn.Module, spec: BenchSpec) -> Contender:
    def set_attention(kind: str) -> None:
        model.config.attention_type = kind  # our models read it on every call

    if spec.task == "encode":
        # BigBirdModel is the encoder; Pegasus's encoder is the stack inside the seq2seq model.
        encoder = model.model.encoder if model.config.model_type == "bigbird_pegasus" else model

        def run(ids: torch.Tensor, mask: torch.Tensor) -> Any:
            return encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    else:

        def run(ids: Any, mask: torch.Tensor | None) -> Any:
            tokens = {"num_beams": spec.num_beams, "max_new_tokens": spec.new_tokens, "min_new_tokens": spec.new_tokens}
            if isinstance(ids, Documents):  # as `bigbird summarize` runs them: encoded alone, decoded together
                pairs = ((doc, None) for doc in ids.inputs)
                size = ids.batch if name != "batch1" else 1
                done = {i: out for i, out, _ in generate_each(model, pairs, size, **tokens)}
                return [done[i] for i in range(len(ids.inputs))]
            return model.generate(ids, mask, **tokens)

    return Contender(name, run, set_attention, model)


def _transformers_contender(model: nn.Module, spec: BenchSpec) -> tuple[Contender, str]:
    """The same weights in transformers: saved by us, loaded by transformers, then pointed at our tensors.

    Sharing storage keeps one copy of the weights in memory, so neither side's peak carries the other's weights.
    """
    transformers = importlib.import_module("transformers")
    # Its progress bars and per-call notices (padding to whole blocks, max_length vs max_new_tokens) would
    # drown the bench's own lines on stderr.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from bigbird.models.checkpoints import checkpoint_state_dict

    config = model.config
    class_name = type(model).__name__  # transformers has every class of ours under the same name
    with tempfile.TemporaryDirectory(prefix="bigbird-bench-") as tmp:
        model.save_pretrained(tmp)
        theirs = getattr(transformers, class_name).from_pretrained(tmp, dtype=DTYPES[spec.dtype])
    theirs = theirs.to(spec.device).eval()
    ours = checkpoint_state_dict(model)
    current = theirs.state_dict()
    same = {k: v for k, v in ours.items() if k in current and current[k].shape == v.shape}
    theirs.load_state_dict(same, strict=False, assign=True)
    if hasattr(theirs, "tie_weights"):
        theirs.tie_weights()
    gc.collect()

    def set_attention(kind: str) -> None:
        # transformers switches itself to full attention for a short input and stays there: set it every time.
        # The model's own setter where it has one (BigBirdModel also pads to whole blocks by it), else the encoder's.
        target = theirs if hasattr(theirs, "set_attention_type") else theirs.get_encoder()
        target.set_attention_type(kind)

    if spec.task == "encode":
        encoder = theirs.get_encoder() if config.model_type == "bigbird_pegasus" else theirs

        def run(ids: torch.Tensor, mask: torch.Tensor) -> Any:
            return encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    else:

        def generate(ids: torch.Tensor, mask: torch.Tensor) -> Any:
            return theirs.generate(
                input_ids=ids,
                attention_mask=mask,
                num_beams=spec.num_beams,
                max_new_tokens=spec.new_tokens,
                min_new_tokens=spec.new_tokens,
                do_sample=False,
            )

        def run(ids: Any, mask: torch.Tensor | None) -> Any:
            if isinstance(ids, Documents):  # one at a time: a padded batch was slower still where measured (#31)
                return [generate(doc, torch.ones_like(doc)) for doc in ids.inputs]
            return generate(ids, mask)

    return Contender("transformers", run, set_attention, theirs), transformers.__version__


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(config: ModelConfig, batch: int, seq_len: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + seq_len * 131 + batch)
    ids = torch.randint(FIRST_ORDINARY_ID, config.vocab_size, (batch, seq_len), generator=gen)
    return ids.to(device), torch.ones_like(ids, device=device)


@dataclass
class Documents:
    """A mixed-length batch of documents (one (1, length) input each), summarized `batch` at a time."""

    inputs: list[torch.Tensor]
    batch: int


def _documents(config: ModelConfig, seq_lens: list[int], batch: int, seed: int, device: str) -> Documents:
    """One random document per length (each length's tokens the same whatever the batch size)."""
    return Documents([_inputs(config, 1, n, seed, device)[0] for n in seq_lens], batch)


def machine() -> dict[str, Any]:
    """What a timing ran on, for every record: the CPU, and the load average (other work on the machine skews
    timings; the load lets a reader see it did)."""
    return {
        "cpu": cpu.cpu_model(),
        "cpu_generation": cpu.cpu_generation(),  # family/model/stepping: "26/2/1"
        "isa": cpu.isa(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def _summary(times: list[float], peaks: list[int], work_tokens: int, documents: int = 0) -> dict[str, Any]:
    median = statistics.median(times)
    summary = {
        "median_s": round(median, 6),
        "min_s": round(min(times), 6),
        "max_s": round(max(times), 6),
        "tokens_per_s": float(f"{work_tokens / median:.6g}") if median > 0 else None,
        "peak_mem_bytes": max(peaks),
    }
    if documents:
        summary["docs_per_hour"] = float(f"{documents * 3600 / median:.4g}") if median > 0 else None
    return summary


def _ratio(theirs: float, ours: float) -> float:
    """theirs / ours to four significant digits: a ratio far below 1 (an int8 kernel that loses) keeps its
    precision, which rounding to decimal places would not."""
    return float(f"{theirs / ours:.4g}")


def _compare_outputs(a: Any, b: Any) -> dict[str, Any]:
    """How far apart two implementations' results are: max |diff| of hidden states, or same generated tokens."""
    if a.is_floating_point():
        return {"max_abs_diff": (a.float() - b.float()).abs().max().item()}
    n = min(a.shape[-1], b.shape[-1])
    return {"same_tokens": bool(a.shape == b.shape and torch.equal(a[..., :n].cpu(), b[..., :n].cpu()))}


def _same_tokens(a: Any, b: Any) -> bool:
    """Whether two runs generated the same tokens: one output, or a --mixed row's list of them."""
    if isinstance(a, list):
        return all(_compare_outputs(x, y)["same_tokens"] for x, y in zip(a, b, strict=True))
    return _compare_outputs(a, b)["same_tokens"]


def min_token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The lowest cosine similarity between two (B, T, H) hidden states over all tokens."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def run_bench(spec: BenchSpec, progress: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Measure every row of `spec`, yielding one record per row as soon as it is done.

    The spec is checked here, at the call, so that a caller learns of a bad one before it opens any output.
    """
    spec.check()
    if spec.task == "train":
        return _measure_train(spec, progress)
    if spec.task == "tokenize":
        return _measure_tokenize(spec, *_tokenize_setup(spec), progress)
    return _measure(spec, progress)


# Lengths measured when none are given: those the model's positions allow.
DEFAULT_SEQ_LENS = (512, 1024, 2048, 4096)


def default_seq_lens(max_positions: int) -> list[int]:
    """DEFAULT_SEQ_LENS up to the model's positions (its longest input alone when all are longer): the defaults
    run on every preset and checkpoint, where lengths past the positions would only be refused."""
    return [n for n in DEFAULT_SEQ_LENS if n <= max_positions] or [max_positions]


def _measure(spec: BenchSpec, progress: Callable[[str], None] | None) -> Iterator[dict[str, Any]]:
    say = progress or (lambda message: None)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    config = build_config(spec)
    # Resolved once, like new_tokens below: the rows (and --mixed's batch of documents) use the lengths measured.
    spec.seq_lens = spec.seq_lens or default_seq_lens(config.max_position_embeddings)
    too_long = [n for n in spec.seq_lens if n > config.max_position_embeddings]
    if too_long:
        raise BenchError(f"sequence lengths {too_long} exceed the model's {config.max_position_embeddings} positions.")
    if spec.task == "summarize" and spec.new_tokens is None:
        # What the checkpoint itself generates at most: its max_length counts the decoder start token.
        spec.new_tokens = max(1, int(getattr(config, "max_length", 21) or 21) - 1)
    say(f"building {spec.preset or spec.model} ({config.model_type})")
    # int8 and a half-precision dtype on the CPU are measured beside the float32 model they come from (contender
    # "fp32"): their speedup over it and how close their numbers stay are the answer to "should I use it?".
    beside_float32 = spec.quantize is not None or (spec.dtype != "float32" and spec.device == "cpu")
    model = build_model(spec, config, "float32" if beside_float32 else None)
    tokenizer = tokenizer_source(spec)
    n_params = sum(p.numel() for p in model.parameters())
    versions = {"torch": torch.__version__}
    ours = model
    if spec.quantize == "int8":
        try:
            ours = quantize_int8(model, keep_float=False)  # as the tasks run it: int8 weights only
        except RuntimeError as exc:  # no working int8 kernel in this torch (or BIGBIRD_PRIVATE_OPS=0)
            raise BenchError(f"{exc}.") from None
    elif beside_float32:
        ours = copy.deepcopy(model).to(DTYPES[spec.dtype])
    contenders = [_our_contender("ours", ours, spec)]
    if beside_float32:
        contenders.append(_our_contender("fp32", model, spec))
    if spec.mixed and max(spec.batch_sizes) > 1:
        contenders.append(_our_contender("batch1", ours, spec))  # the same documents one at a time, interleaved
    if spec.compare == "transformers":
        say("loading the same weights into transformers")
        contender, versions["transformers"] = _transformers_contender(model if spec.quantize else ours, spec)
        contenders.append(contender)
    meter = MemoryMeter(device)

    with torch.inference_mode():
        for attention in spec.attentions:
            for batch in spec.batch_sizes:
                for seq_len in [0] if spec.mixed else spec.seq_lens:
                    if spec.mixed:
                        say(
                            f"{attention} batch {batch}: {len(spec.seq_lens)} documents of {min(spec.seq_lens)}"
                            f"-{max(spec.seq_lens)} tokens"
                        )
                    else:
                        say(f"{attention} batch {batch} × {seq_len} tokens")
                    row = [c for c in contenders if c.name != "batch1" or batch > 1]
                    yield _measure_row(spec, config, row, meter, device, attention, batch, seq_len) | {
                        "parameters": n_params,
                        # Which of the checkpoint's files its tasks take their ids from (the bench's inputs are
                        # random ids; None for a preset, which has no tokenizer).
                        "tokenizer": tokenizer,
                        "versions": versions,
                        # The kernels our float32 and int8 layers ran (chosen by measurement on this machine).
                        "kernels": kernels.summary(),
                        "machine": machine(),
                    }


def _measure_row(
    spec: BenchSpec,
    config: ModelConfig,
    contenders: list[Contender],
    meter: MemoryMeter,
    device: torch.device,
    attention: str,
    batch: int,
    seq_len: int,
) -> dict[str, Any]:
    if spec.mixed:
        ids: Any = _documents(config, spec.seq_lens, batch, spec.seed, spec.device)
        mask = None
    else:
        ids, mask = _inputs(config, batch, seq_len, spec.seed, spec.device)
    # Each implementation's first result is kept to compare the implementations' numbers with each other.
    outputs: dict[str, Any] = {}
    for _ in range(spec.warmup):
        for contender in contenders:
            contender.set_attention(attention)
            outputs.setdefault(contender.name, contender.run(ids, mask))
    times: dict[str, list[float]] = {r.name: [] for r in contenders}
    peaks: dict[str, list[int]] = {r.name: [] for r in contenders}
    bases: dict[str, list[int]] = {r.name: [] for r in contenders}
    for _ in range(spec.repeat):
        for contender in contenders:
            contender.set_attention(attention)
            _sync(device)
            meter.reset()
            bases[contender.name].append(meter.current())
            start = time.perf_counter()
            out = contender.run(ids, mask)
            _sync(device)
            times[contender.name].append(time.perf_counter() - start)
            elsewhere = others_bytes(contenders, contender.name)  # after the call: it may have repacked weights
            peaks[contender.name].append(meter.peak() - elsewhere)
            bases[contender.name][-1] -= elsewhere
            outputs.setdefault(contender.name, out)
            del out

    # Resident memory before the call that reached the highest peak: peak minus this is what the call added.
    base = {name: bases[name][max(range(len(p)), key=p.__getitem__)] for name, p in peaks.items()}
    documents = len(spec.seq_lens) if spec.mixed else 0
    work_tokens = (documents or batch) * (seq_len if spec.task == "encode" else spec.new_tokens)
    record: dict[str, Any] = {
        "task": spec.task,
        "model": spec.preset or spec.model,
        "attention": attention,
        "seq_len": seq_len,
        "batch_size": batch,
        "dtype": spec.dtype,
        "device": spec.device,
        "threads": torch.get_num_threads(),
        "repeat": spec.repeat,
        "warmup": spec.warmup,
        "quantize": spec.quantize,
    }
    if spec.task == "summarize":
        record |= {"num_beams": spec.num_beams, "new_tokens": spec.new_tokens}
    if spec.mixed:  # the row is the batch of documents: seq_len is their total
        record |= {"seq_len": sum(spec.seq_lens), "seq_lens": spec.seq_lens, "documents": documents}
    # Encoding is counted in input tokens per second, summarizing in generated tokens per second.
    record["tokens_per_s_counts"] = "input" if spec.task == "encode" else "generated"
    record |= _summary(times["ours"], peaks["ours"], work_tokens, documents)
    record |= {"mem_base_bytes": base["ours"], "mem_scope": meter.scope}
    if "batch1" in times:
        record["batch1"] = _summary(times["batch1"], peaks["batch1"], work_tokens, documents)
        record["speedup_vs_batch1"] = _ratio(record["batch1"]["median_s"], record["median_s"])
        same = all(torch.equal(a, b) for a, b in zip(outputs["ours"], outputs["batch1"], strict=True))
        record["same_tokens_as_batch1"] = same
    if "fp32" in times:
        record["fp32"] = _summary(times["fp32"], peaks["fp32"], work_tokens, documents) | {
            "mem_base_bytes": base["fp32"]
        }
        record["speedup_vs_fp32"] = _ratio(record["fp32"]["median_s"], record["median_s"])
        if spec.task == "encode":
            record["cosine_min"] = min_token_cosine(outputs["ours"], outputs["fp32"])
        else:  # generated tokens: whether int8 or the half-precision model picked the same ones
            record["same_tokens_as_fp32"] = _same_tokens(outputs["ours"], outputs["fp32"])
    if "transformers" in times:
        theirs = _summary(times["transformers"], peaks["transformers"], work_tokens, documents)
        record["transformers"] = theirs | {"mem_base_bytes": base["transformers"]}
        record["ratio"] = _ratio(theirs["median_s"], record["median_s"])
        # transformers runs the float32 model beside int8, the spec's dtype otherwise.
        reference = outputs["fp32"] if spec.quantize else outputs["ours"]
        if spec.mixed:
            record["same_tokens"] = _same_tokens(reference, outputs["transformers"])
        else:
            record |= _compare_outputs(reference, outputs["transformers"])
    return record


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------
def plot(records: list[dict[str, Any]], path: str | Path) -> None:
    """Time and peak memory against sequence length, one line per implementation × attention × batch size."""
    from bigbird.eval.report import require_matplotlib

    plt = require_matplotlib(BenchError)
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in records:
        key = f"{r['attention']} b{r['batch_size']}"
        ours = f"ours {r['quantize']}" if r.get("quantize") else "ours"
        series.setdefault(f"{ours} {key}", []).append((r["seq_len"], r["median_s"], r["peak_mem_bytes"]))
        for other in ("transformers", "fp32"):
            if other in r:
                o = r[other]
                series.setdefault(f"{other} {key}", []).append((r["seq_len"], o["median_s"], o["peak_mem_bytes"]))
    styles = {"ours": "-", "transformers": "--", "fp32": ":"}
    for label, points in series.items():
        points.sort()
        xs = [p[0] for p in points]
        style = styles.get(label.split()[0], "-")
        ax_time.plot(xs, [p[1] for p in points], style, marker="o", label=label)
        ax_mem.plot(xs, [p[2] / 2**20 for p in points], style, marker="o", label=label)
    title = records[0]["model"] if records else ""
    ax_time.set(xlabel="sequence length (tokens)", ylabel="median seconds", title=f"{title}: time")
    ax_mem.set(xlabel="sequence length (tokens)", ylabel="peak memory (MiB)", title=f"{title}: peak memory")
    for ax in (ax_time, ax_mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# --task train: one training step
# --------------------------------------------------------------------------------------------------
def _measure_train(spec: BenchSpec, progress: Callable[[str], None] | None) -> Iterator[dict[str, Any]]:
    """Forward and backward of a sequence classifier with labels (what one optimizer step computes before the
    update, which is torch's AdamW on either side), in train mode with dropout off so the two sides compute the
    same thing: ours, ours with gradient checkpointing, and with --compare transformers theirs on the same tensors.
    `--dtype bfloat16` autocasts ours over float32 weights; transformers runs its float32 step beside it (the
    baseline a bfloat16 step is held against; its block-sparse attention also fails under bfloat16 autocast)."""
    from bigbird.models.architectures import model_class
    from bigbird.models.checkpoints import checkpoint_state_dict
    from bigbird.training.loop import checkpoint_layers

    say = progress or (lambda message: None)
    reuse_large_blocks()  # as a training process has it (the finetune command, each Ray Train worker)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    config = build_config(spec)
    if config.model_type != "big_bird":
        raise BenchError("--task train measures a BigBird classifier (e.g. --preset bigbird-roberta-base).")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.num_labels = 2
    cls = model_class("BigBirdForSequenceClassification")
    torch.manual_seed(spec.seed)
    say(f"building {spec.preset or spec.model} as {cls.__name__}")
    ours = cls(config).train()
    checkpointed = cls(config).train()
    checkpointed.load_state_dict(ours.state_dict(), assign=True)  # the same tensors, recomputed in the backward
    checkpoint_layers(checkpointed)
    runs: dict[str, nn.Module] = {"ours": ours, "checkpointing": checkpointed}
    versions = {"torch": torch.__version__}
    if spec.compare == "transformers":
        transformers = importlib.import_module("transformers")
        transformers.logging.set_verbosity_error()
        with tempfile.TemporaryDirectory(prefix="bigbird-bench-") as tmp:
            ours.save_pretrained(tmp)
            theirs = transformers.BigBirdForSequenceClassification.from_pretrained(tmp)
        theirs.load_state_dict(checkpoint_state_dict(ours), strict=False, assign=True)
        runs["transformers"] = theirs.train()
        versions["transformers"] = transformers.__version__
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.dtype == "bfloat16")
    meter = MemoryMeter(torch.device("cpu"))
    for attention in spec.attentions:
        ours.config.attention_type = attention  # our models read it on every call (both share this config)
        if "transformers" in runs:
            runs["transformers"].bert.set_attention_type(attention)
        for batch in spec.batch_sizes:
            for seq_len in spec.seq_lens:
                say(f"train step {attention} batch {batch} × {seq_len} tokens")
                ids, mask = _inputs(config, batch, seq_len, spec.seed, "cpu")
                labels = torch.zeros(batch, dtype=torch.long)
                times: dict[str, list[float]] = {name: [] for name in runs}
                peaks: dict[str, list[int]] = {name: [] for name in runs}
                losses: dict[str, float] = {}
                bases: dict[str, int] = {}
                for k in range(spec.warmup + spec.repeat):
                    for name, model in runs.items():
                        # Every side's gradients, not only this one's: another model's left from its own step
                        # would count in this step's peak (the sides share weights, not gradients).
                        for each in runs.values():
                            each.zero_grad(set_to_none=True)
                        gc.collect()
                        meter.reset()
                        base = meter.current()
                        start = time.perf_counter()
                        with autocast if name != "transformers" else contextlib.nullcontext():
                            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                        loss.backward()
                        seconds = time.perf_counter() - start
                        if k >= spec.warmup:
                            times[name].append(seconds)
                            peaks[name].append(meter.peak())
                            bases[name] = base
                        losses[name] = float(loss.detach())
                        del loss
                for model in runs.values():
                    model.zero_grad(set_to_none=True)
                record: dict[str, Any] = {
                    "task": "train",
                    "model": spec.preset or spec.model,
                    "attention": attention,
                    "seq_len": seq_len,
                    "batch_size": batch,
                    "dtype": spec.dtype,
                    "autocast": spec.dtype == "bfloat16",
                    "threads": torch.get_num_threads(),
                    "repeat": spec.repeat,
                    "warmup": spec.warmup,
                    "tokens_per_s_counts": "input",
                }
                record |= _summary(times["ours"], peaks["ours"], batch * seq_len) | {"loss": losses["ours"]}
                record["mem_base_bytes"] = bases["ours"]
                record["checkpointing"] = _summary(times["checkpointing"], peaks["checkpointing"], batch * seq_len)
                record["checkpointing"]["mem_base_bytes"] = bases["checkpointing"]
                if "transformers" in runs:
                    theirs_summary = _summary(times["transformers"], peaks["transformers"], batch * seq_len)
                    record["transformers"] = theirs_summary | {
                        "loss": losses["transformers"],
                        "dtype": "float32",
                        "mem_base_bytes": bases["transformers"],
                    }
                    record["ratio"] = _ratio(theirs_summary["median_s"], record["median_s"])
                    record["memory_ratio"] = round(record["peak_mem_bytes"] / theirs_summary["peak_mem_bytes"], 3)
                    record["checkpointing_memory_ratio"] = round(
                        record["checkpointing"]["peak_mem_bytes"] / theirs_summary["peak_mem_bytes"], 3
                    )
                yield record | {
                    "versions": versions,
                    "machine": machine(),
                }


# --------------------------------------------------------------------------------------------------
# --task tokenize: a checkpoint's tokenizer files on one text
# --------------------------------------------------------------------------------------------------
def _tokenize_setup(spec: BenchSpec) -> tuple[str, dict[str, Any], str]:
    """The --text file's text, the --model folder's tokenizers by file (`bigbird.tools.tokenize_bench`), and the
    file the tasks read; BenchError in one sentence when any can't be had. Run at the call (`run_bench`), so a bad
    file is refused before any output is opened."""
    from bigbird.models.checkpoints import CONFIG_FILES, TOKENIZER_FILES, CheckpointError, resolve_checkpoint
    from bigbird.models.tokenizers import tokenizer_file
    from bigbird.tasks.documents import describe, read_file
    from bigbird.tools import tokenize_bench

    document = read_file(Path(spec.text), "text")  # as the task commands read a text file
    if document.error is not None:
        raise BenchError(f"--text {spec.text}: {document.error}")
    if not document.text.strip():
        raise BenchError(f"--text {spec.text} holds no text to tokenize.")
    try:
        files = CONFIG_FILES + TOKENIZER_FILES  # a Hub id's tokenizer, not its weights
        directory = resolve_checkpoint(spec.model, revision=spec.revision, allow_patterns=files)
    except CheckpointError as exc:
        raise BenchError(str(exc)) from None
    model_type = tokenize_bench.folder_family(directory)
    if model_type is None:
        raise BenchError(
            f"{spec.model}: neither config.json's model_type nor tokenizer_config.json's tokenizer_class is a"
            " BigBird or Pegasus one."
        )
    try:
        tokenizers = tokenize_bench.folder_tokenizers(directory, model_type)
    except Exception as exc:  # an unreadable or foreign file: one sentence, as the tasks say it
        raise BenchError(f"{spec.model}: the tokenizer can't be loaded ({describe(exc)}).") from None
    if not tokenizers:
        raise BenchError(f"{spec.model} has neither a spiece.model nor a tokenizer.json to time.")
    return document.text, tokenizers, tokenizer_file(directory)


def _measure_tokenize(
    spec: BenchSpec, text: str, tokenizers: dict[str, Any], serving: str, progress: Callable[[str], None] | None
) -> Iterator[dict[str, Any]]:
    """Each tokenizer file of the --model folder on the --text file's text, as the tasks tokenize a document
    (`bigbird.tools.tokenize_bench`): one record per file, in seconds and seconds per megabyte (10^6 bytes of
    UTF-8), with whether the tasks read that file (`serves`) and whether every file gave the serving one's ids
    and character spans (`same_ids`)."""
    import sentencepiece
    import tokenizers as tokenizers_library

    from bigbird.tasks.base import text_pieces
    from bigbird.tasks.documents import describe
    from bigbird.tools import tokenize_bench

    say = progress or (lambda message: None)
    megabytes = len(text.encode("utf-8")) / 1e6
    say(f"tokenizing {megabytes:.2f} MB through {' and '.join(tokenizers)} ({spec.warmup} + {spec.repeat} rounds)")
    try:
        with tokenize_bench.on_cores(spec.threads) as cores:
            timed = tokenize_bench.time_tokenizers(tokenizers, text, spec.repeat, spec.warmup)
    except OSError as exc:
        raise BenchError(f"{describe(exc)}.") from None
    served = timed[serving].encoding
    same = all(tokenize_bench.same_encoding(t.encoding, served) for t in timed.values())
    versions = {"sentencepiece": sentencepiece.__version__, "tokenizers": tokenizers_library.__version__}
    for name, t in timed.items():
        median = statistics.median(t.seconds)
        yield {
            "task": "tokenize",
            "model": spec.model,
            "tokenizer_file": name,
            "tokenizer_class": type(tokenizers[name]).__name__,
            "serves": name == serving,
            "megabytes": round(megabytes, 6),
            "characters": len(text),
            "pieces": sum(1 for _ in text_pieces(text)),
            "tokens": len(t.encoding.ids),
            "threads": cores,
            "repeat": spec.repeat,
            "warmup": spec.warmup,
            "median_s": round(median, 6),
            "min_s": round(min(t.seconds), 6),
            "max_s": round(max(t.seconds), 6),
            "s_per_mb": round(median / megabytes, 6),
            "same_ids": same,
            "versions": versions,
            "machine": machine(),
        }
