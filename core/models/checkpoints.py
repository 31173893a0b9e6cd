"""Checkpoint I/O: find a checkpoint (Hub id or directory), read and write its weights, and translate names.

Our modules use short names (`layers.3.attn.query`); checkpoints on the Hub use the reference's names
(`encoder.layer.3.attention.self.query`). The translation is one explicit table per family below, applied
to module prefixes on `.` boundaries, so that every tensor's name can be read off the table.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .initialization import init_parameter, initializer_std

CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = [
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
]
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
PICKLE_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


class CheckpointError(Exception):
    """A checkpoint can't be had or doesn't fit the model; the message is one sentence for the user."""


# --------------------------------------------------------------------------------------------------
# Finding a checkpoint
# --------------------------------------------------------------------------------------------------
def resolve_checkpoint(
    name_or_path: str | Path, *, revision: str | None = None, allow_patterns: list[str] | None = None
) -> Path:
    """A local directory as is, or a Hub id downloaded (or found in the cache) through huggingface_hub.

    huggingface_hub honours HF_HOME, HF_HUB_OFFLINE and HF_TOKEN. Only the files a checkpoint needs are
    fetched: config, tokenizer, and safetensors weights, falling back to pickled weights when a repo has none.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(f"{name} is not a checkpoint directory and not a Hub model id.")
    patterns = allow_patterns or CONFIG_FILES + TOKENIZER_FILES + SAFETENSORS_FILES
    directory = _download(name, revision, patterns)
    if allow_patterns is None and not _has_weights(directory):
        directory = _download(name, revision, CONFIG_FILES + TOKENIZER_FILES + PICKLE_FILES)
    return directory


def _download(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision}" if revision else ""
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except GatedRepoError:
        raise CheckpointError(f"model {repo_id} is gated: set HF_TOKEN to a token that has access.") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"model {repo_id} has no revision {revision}.") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"model {repo_id} was not found on the Hub (or is private: set HF_TOKEN).") from None
    except HFValidationError:
        raise CheckpointError(f"{repo_id} is not a checkpoint directory and not a valid Hub model id.") from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"model {repo_id}{at} is not in the local Hub cache and can't be downloaded (offline?)."
        ) from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"model {repo_id}{at} could not be downloaded: {err}".rstrip(".") + ".") from None


def _has_weights(directory: Path) -> bool:
    return any((directory / n).exists() for n in ("model.safetensors", "model.safetensors.index.json"))


# --------------------------------------------------------------------------------------------------
# Reading and writing tensors
# --------------------------------------------------------------------------------------------------
def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: safetensors (single or sharded) first, else pytorch_model.bin.

    Pickled weights are read with `weights_only=True`: a pickle that would build anything but tensors is
    refused, never executed.
    """
    directory = Path(directory)
    for single, index, reader in (
        ("model.safetensors", "model.safetensors.index.json", _read_safetensors),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", _read_pickle),
    ):
        if (directory / single).exists():
            return reader(directory / single)
        if (directory / index).exists():
            tensors: dict[str, torch.Tensor] = {}
            for shard in sorted(set(_weight_map(directory / index).values())):
                tensors.update(reader(directory / shard))
            return tensors
    raise CheckpointError(f"{directory} has no model.safetensors or pytorch_model.bin weights.")


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{index.name} is not a weights index (it needs a 'weight_map' object).") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index.name} is not a weights index (its 'weight_map' must map names to files).")
    return weight_map


# The element types of the safetensors format, by the names its header gives them.
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_MAX_HEADER = 100 * 2**20  # the format's own limit


@dataclass(frozen=True)
class _Stored:
    """Where one tensor lies in a safetensors file: its name, type, shape and bytes [begin, end) after the header."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, each read straight into a tensor torch allocated.

    safetensors' own loader maps the file and hands out views of the mapping (0.8: its `pread` backend reads
    instead, 16 bytes off torch's 64-byte grid). A model keeping those views would fault, or change, when the file
    is rewritten in place (`save_pretrained` into the folder it came from, a copy over it), and copying them out
    holds the file twice at the peak. The format is a little-endian header length, a JSON header (each tensor's
    type, shape and byte range) and the bytes, one tensor after another: the whole layout is checked before
    anything is allocated, then read one tensor at a time.
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            header_len = int.from_bytes(file.read(8), "little")
            if not 0 < header_len <= min(size - 8, SAFETENSORS_MAX_HEADER):
                raise ValueError("header length")
            data = 8 + header_len  # where the tensors' bytes start
            layout = _safetensors_layout(json.loads(file.read(header_len)), size - data, path)
            tensors: dict[str, torch.Tensor] = {}
            for stored in layout:
                tensor = torch.empty(stored.shape, dtype=stored.dtype)
                raw = tensor.view(-1).view(torch.uint8)
                file.seek(data + stored.begin)
                if file.readinto(memoryview(raw.numpy())) != raw.numel():
                    raise ValueError(f"{stored.name} cut short")
                tensors[stored.name] = tensor
            return tensors
    except FileNotFoundError:
        raise CheckpointError(f"{path}, named by the weights index, is missing.") from None
    except (ValueError, KeyError, TypeError, AttributeError):  # JSON's errors are ValueErrors
        raise CheckpointError(f"{path} is not a whole safetensors file (truncated or damaged?).") from None


def _safetensors_layout(header: dict, data_bytes: int, path: Path) -> list[_Stored]:
    """The tensors a safetensors header describes, in file order, once each has been seen to take whole elements
    of its type and shape, the tensors to follow one another with no gap or overlap, and the last to end where
    the file does (as safetensors itself requires): a header can't make the reader allocate more than the file
    holds. ValueError/KeyError/TypeError where it doesn't hold."""
    layout = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{path} holds {name} as {entry['dtype']}, a type bigbird-cli doesn't read"
                f" ({', '.join(SAFETENSORS_DTYPES)})."
            )
        dtype, shape, (begin, end) = SAFETENSORS_DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
        if not all(type(n) is int and n >= 0 for n in [*shape, begin, end]):
            raise ValueError(f"{name}'s shape or offsets")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"{name}'s size")
        layout.append(_Stored(name, dtype, tuple(shape), begin, end))
    layout.sort(key=lambda stored: (stored.begin, stored.end))
    ends = [0] + [stored.end for stored in layout]
    if any(stored.begin != previous for stored, previous in zip(layout, ends, strict=False)) or ends[-1] != data_bytes:
        raise ValueError("the tensors don't tile the file")
    return layout


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refused to load {path}: it holds more than tensors, and loading it could run code."
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}, named by the weights index, is missing.") from None
    except Exception:  # a zip cut short, an empty file, not a torch file at all
        raise CheckpointError(f"{path} is not a whole PyTorch weights file (truncated or damaged?).") from None
    if isinstance(data, dict) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        # A training checkpoint: {"state_dict": {...}, "epoch": 3} (or "model"); the weights are the one dict in it.
        inner = [v for k, v in data.items() if k in ("state_dict", "model") and isinstance(v, dict)]
        data = inner[0] if len(inner) == 1 else data
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a dictionary of tensors.")
    other = next((k for k, v in data.items() if not isinstance(v, torch.Tensor)), None)
    if other is not None:
        kind = type(data[other]).__name__
        raise CheckpointError(f"{path} holds {other!r}, a {kind}, among its weights: save the state dict alone.")
    return data


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write beside `path`, then rename: a reader of the old file (another process's model) never sees it half
    rewritten, and a crash leaves the old file whole. The file gets an ordinary file's mode (0644 under a 022
    umask): safetensors writes its files private (0600), which kept a shared checkpoint from the others."""
    partial = path.with_name(f".{path.name}.partial")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(partial), metadata={"format": "pt"})
    with contextlib.suppress(OSError):  # a file system without modes (vfat, some network mounts) keeps its own
        partial.chmod(0o666 & ~umask())
    os.replace(partial, path)


_UMASK_SWAP = threading.Lock()


def umask() -> int:
    """The process's umask: what an ordinary new file or folder leaves out of 0666 / 0777. Read from /proc where
    Linux shows it; elsewhere set and put back under a lock (two threads swapping at once could leave the
    process with the value one of them set)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    with _UMASK_SWAP:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------------
# Name tables
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NameTable:
    """Our module prefixes ↔ checkpoint prefixes for one family.

    `base` applies inside the base model (under `base_prefix` in a head model); `heads` to the rest.
    `{i}` stands for a layer index. `aliases` lists other checkpoint names a tensor has been stored under.
    """

    base_prefix: tuple[str, str]
    base: list[tuple[str, str]]
    heads: list[tuple[str, str]] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)


def _compile(template: str) -> str:
    return re.escape(template).replace(re.escape("{i}"), r"(\d+)")


def _translate_prefix(name: str, pairs: list[tuple[str, str]], reverse: bool) -> str | None:
    best: tuple[int, str] | None = None
    for ours, theirs in pairs:
        src, dst = (theirs, ours) if reverse else (ours, theirs)
        m = re.match(_compile(src) + r"(?=\.|$)", name)
        if m and (best is None or m.end() > best[0]):
            out = dst
            for group in m.groups():
                out = out.replace("{i}", group, 1)
            best = (m.end(), out + name[m.end() :])
    return None if best is None else best[1]


def translate(name: str, table: NameTable, *, to_checkpoint: bool = True) -> str | None:
    """Our parameter name → the checkpoint's (or back with `to_checkpoint=False`); None if unknown."""
    ours_prefix, theirs_prefix = table.base_prefix
    src_prefix, dst_prefix = (ours_prefix, theirs_prefix) if to_checkpoint else (theirs_prefix, ours_prefix)
    if name.startswith(src_prefix + "."):
        inner = _translate_prefix(name[len(src_prefix) + 1 :], table.base, reverse=not to_checkpoint)
        return None if inner is None else f"{dst_prefix}.{inner}"
    head = _translate_prefix(name, table.heads, reverse=not to_checkpoint)
    return head if head is not None else _translate_prefix(name, table.base, reverse=not to_checkpoint)


BIGBIRD_TABLE = NameTable(
    base_prefix=("bert", "bert"),
    base=[
        ("embeddings.tokens", "embeddings.word_embeddings"),
        ("embeddings.positions", "embeddings.position_embeddings"),
        ("embeddings.types", "embeddings.token_type_embeddings"),
        ("embeddings.norm", "embeddings.LayerNorm"),
        ("layers.{i}.attn", "encoder.layer.{i}.attention.self"),
        ("layers.{i}.attn_out", "encoder.layer.{i}.attention.output.dense"),
        ("layers.{i}.attn_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
        ("layers.{i}.cross", "encoder.layer.{i}.crossattention.self"),
        ("layers.{i}.cross_out", "encoder.layer.{i}.crossattention.output.dense"),
        ("layers.{i}.cross_norm", "encoder.layer.{i}.crossattention.output.LayerNorm"),
        ("layers.{i}.ffn_in", "encoder.layer.{i}.intermediate.dense"),
        ("layers.{i}.ffn_out", "encoder.layer.{i}.output.dense"),
        ("layers.{i}.ffn_norm", "encoder.layer.{i}.output.LayerNorm"),
        ("pooler", "pooler"),
    ],
    heads=[
        ("lm.dense", "cls.predictions.transform.dense"),
        ("lm.norm", "cls.predictions.transform.LayerNorm"),
        ("lm.decoder", "cls.predictions.decoder"),
        ("lm.bias", "cls.predictions.bias"),
        ("nsp", "cls.seq_relationship"),
        ("classifier.dense", "classifier.dense"),
        ("classifier.out", "classifier.out_proj"),
        ("classifier", "classifier"),
        ("qa.ffn_in", "qa_classifier.intermediate.dense"),
        ("qa.ffn_out", "qa_classifier.output.dense"),
        ("qa.norm", "qa_classifier.output.LayerNorm"),
        ("qa.out", "qa_classifier.qa_outputs"),
    ],
    aliases={"cls.predictions.bias": ["cls.predictions.decoder.bias"]},
)


def _pegasus_attention(ours: str, theirs: str) -> list[tuple[str, str]]:
    """A decoder attention block: our query/key/value/out are the reference's q_proj/k_proj/v_proj/out_proj."""
    names = (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "out_proj"))
    return [(f"{ours}.{a}", f"{theirs}.{b}") for a, b in names]


# BigBirdPegasus. The shared embedding matrix is stored once (`model.shared.weight`); the encoder's and decoder's
# token embeddings and the LM head are tied to it (older checkpoints also store the copies, listed as aliases).
PEGASUS_TABLE = NameTable(
    base_prefix=("model", "model"),
    base=[
        ("shared", "shared"),
        ("encoder.tokens", "encoder.embed_tokens"),
        ("encoder.positions", "encoder.embed_positions"),
        ("encoder.layers.{i}.attn", "encoder.layers.{i}.self_attn.self"),
        ("encoder.layers.{i}.attn_out", "encoder.layers.{i}.self_attn.output"),
        ("encoder.layers.{i}.attn_norm", "encoder.layers.{i}.self_attn_layer_norm"),
        ("encoder.layers.{i}.ffn_in", "encoder.layers.{i}.fc1"),
        ("encoder.layers.{i}.ffn_out", "encoder.layers.{i}.fc2"),
        ("encoder.layers.{i}.ffn_norm", "encoder.layers.{i}.final_layer_norm"),
        ("encoder.norm", "encoder.layernorm_embedding"),
        ("decoder.tokens", "decoder.embed_tokens"),
        ("decoder.positions", "decoder.embed_positions"),
        *_pegasus_attention("decoder.layers.{i}.attn", "decoder.layers.{i}.self_attn"),
        ("decoder.layers.{i}.attn_norm", "decoder.layers.{i}.self_attn_layer_norm"),
        *_pegasus_attention("decoder.layers.{i}.cross", "decoder.layers.{i}.encoder_attn"),
        ("decoder.layers.{i}.cross_norm", "decoder.layers.{i}.encoder_attn_layer_norm"),
        ("decoder.layers.{i}.ffn_in", "decoder.layers.{i}.fc1"),
        ("decoder.layers.{i}.ffn_out", "decoder.layers.{i}.fc2"),
        ("decoder.layers.{i}.ffn_norm", "decoder.layers.{i}.final_layer_norm"),
        ("decoder.norm", "decoder.layernorm_embedding"),
    ],
    heads=[
        ("lm_head", "lm_head"),
        ("final_logits_bias", "final_logits_bias"),
        ("classifier.dense", "classification_head.dense"),
        ("classifier.out", "classification_head.out_proj"),
        ("qa", "qa_outputs"),
    ],
    aliases={
        "model.shared.weight": ["model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"],
        # A decoder-only model read from a seq2seq checkpoint takes the shared matrix.
        "model.decoder.embed_tokens.weight": ["model.shared.weight"],
        "lm_head.weight": ["model.shared.weight"],
    },
)


# By config.json's model_type.
TABLES: dict[str, NameTable] = {"big_bird": BIGBIRD_TABLE, "bigbird_pegasus": PEGASUS_TABLE}


def _candidates(name: str, table: NameTable) -> list[str]:
    """Where a tensor may sit in a file: its name, then with/without the base prefix, then old aliases."""
    prefix = table.base_prefix[1] + "."
    other = name[len(prefix) :] if name.startswith(prefix) else prefix + name
    return [name, other, *table.aliases.get(name, [])]


# --------------------------------------------------------------------------------------------------
# Loading into / saving from a model
# --------------------------------------------------------------------------------------------------
def _stored_names(model: nn.Module) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(our name, checkpoint name, tensor) for every tensor a checkpoint stores: tied copies are left out, since
    the loader restores them by tying."""
    model_type = model.config_class.model_type
    table = TABLES[model_type]
    tied = {target for target, _ in model.tied} if getattr(model.config, "tie_word_embeddings", True) else set()
    for ours, tensor in model.state_dict().items():
        if ours in tied:
            continue
        theirs = translate(ours, table)
        if theirs is None:
            raise CheckpointError(f"{type(model).__name__}.{ours} has no entry in the {model_type} name table.")
        yield ours, theirs, tensor


# Where a head class keeps the model it is built on (BigBird's `bert`, Pegasus' `model`): what lies outside is the
# head itself.
BODY_PREFIXES = ("bert.", "model.")


def load_weights(model: nn.Module, directory: str | Path, *, strict: bool = True) -> list[str]:
    """Fill `model` from a checkpoint directory; a missing or mis-shaped tensor is an error naming it.

    Unless `strict`, the weights of a head the checkpoint lacks (a classifier on a pretrained body, to fine-tune)
    are drawn at random here (a model built to be loaded has none: `initialization.skipping_init`), and their
    checkpoint names are returned; the body must still be whole.

    The tensors read become the model's own (in its type, contiguous), rather than being copied into it: a load
    then holds the weights once, not twice. A tensor is copied where it would not be a weight of its own: read
    twice (a name two of ours map to, a pickle's shared storage: no two weights share memory), a slice of a
    larger storage (which it would keep alive), or not at the 64-byte alignment torch gives its own tensors
    (what the matmul libraries' code paths, and so their bits, may depend on).
    """
    table = TABLES[model.config_class.model_type]
    stored = read_state_dict(directory)
    values: dict[str, torch.Tensor] = {}
    held: set[int] = set()  # the storages already given to a weight
    missing: dict[str, str] = {}  # ours: theirs
    for ours, theirs, param in _stored_names(model):
        found = next((c for c in _candidates(theirs, table) if c in stored), None)
        if found is None and not strict and not ours.startswith(BODY_PREFIXES):
            missing[ours] = theirs
            continue
        if found is None:
            raise CheckpointError(f"{directory}: weight {theirs} is missing from the checkpoint.")
        tensor = stored[found]
        if tensor.shape != param.shape:
            raise CheckpointError(
                f"{directory}: weight {found} has shape {tuple(tensor.shape)}, the model expects {tuple(param.shape)}."
            )
        tensor = tensor.to(param.dtype).contiguous()  # each a no-op where it already is
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in held or not whole or tensor.data_ptr() % 64:
            tensor = tensor.clone()
        held.add(storage.data_ptr())
        values[ours] = tensor
    model.load_state_dict(values, strict=False, assign=True)
    std = initializer_std(model.config)
    for ours in missing:
        owner, _, name = ours.rpartition(".")
        init_parameter(model.get_submodule(owner), name, std)
    model.tie_weights()
    return list(missing.values())


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under checkpoint names, tied copies left out (the loader restores them)."""
    return {theirs: tensor for _, theirs, tensor in _stored_names(model)}


def save_weights(model: nn.Module, directory: str | Path) -> None:
    write_safetensors(checkpoint_state_dict(model), Path(directory) / "model.safetensors")
