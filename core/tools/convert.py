"""`bigbird convert`: turn a checkpoint into a clean Hub-layout directory that this toolkit and transformers load.

This is a format conversion, not a re-mapping: tensor names stay exactly as the source stores them, so any
loader that read the source reads the result. What changes is the container (pickle → safetensors, optionally
sharded), optionally the floating-point dtype, and optionally the attention settings in config.json.

Safety: pickled weights are read only through `bigbird.models.checkpoints.read_state_dict`, which unpickles with
`weights_only=True`, so a pickle that carries code is refused and never run. Output is written to a temporary
directory next to DST and renamed into place at the end, so an interrupted conversion never leaves a
half-written DST behind.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigbird.models.checkpoints import (
    TABLES,
    CheckpointError,
    read_state_dict,
    resolve_checkpoint,
    translate,
    umask,
    write_safetensors,
)
from bigbird.models.config import ATTENTION_TYPES, ModelConfig, load_config
from bigbird.tasks.documents import describe

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Files that travel with the weights unchanged (tokenizer and generation settings).
COPIED_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)
DEFAULT_MAX_SHARD_SIZE = "5GB"
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


class ConvertError(CheckpointError):
    """A conversion that can't or mustn't be done; the message is one sentence for the user."""


class VerifyError(ConvertError):
    """--verify found DST's outputs further from SRC's than its dtype's rounding explains; `report` is what was
    written and measured (DST stays: the user decides)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


# --verify's tolerance: this many roundings of DST's weight dtype (its machine epsilon), relative to the size of
# SRC's outputs. A dtype change alone stays well inside it (float32 → float32 is 0; bfloat16's ~8 bits of
# mantissa leave a few of its roundings); a broken weight or a wrong cast does not.
VERIFY_ROUNDINGS = 16


def verify_tolerance(dtype: torch.dtype, scale: float) -> float:
    """Largest max |diff| --verify accepts for weights in `dtype`, outputs of size `scale` (max |output|)."""
    return VERIFY_ROUNDINGS * torch.finfo(dtype).eps * max(1.0, scale)


@dataclass
class ConvertOptions:
    """Everything `convert` may change besides the file format; None leaves the source's value."""

    dtype: str | None = None
    attention_type: str | None = None
    block_size: int | None = None
    num_random_blocks: int | None = None
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE
    force: bool = False
    verify: bool = False
    revision: str | None = None


# --------------------------------------------------------------------------------------------------
# Checks on the options (all done before any tensor is read, so a bad flag fails fast)
# --------------------------------------------------------------------------------------------------
def parse_size(text: str | int) -> int:
    """ "2GB" → 2·10⁹ bytes, "500MiB" → 500·2²⁰, a bare number is bytes (decimal units, as the Hub counts)."""
    if isinstance(text, int):
        size = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
        unit = m.group(2).upper() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise ConvertError(f"{text!r} is not a size; write it like 2GB, 500MB or 100MiB.")
        size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ConvertError(f"the shard size must be positive, not {text!r}.")
    return size


def rewrite_config(config: ModelConfig, options: ConvertOptions) -> list[str]:
    """Apply the attention and dtype options to `config` in place; refuse settings the model can't run.

    Returns warnings about settings that run but probably not as meant (e.g. block-sparse that every input
    length the position table allows would fall back to full attention).
    """
    if options.attention_type is not None:
        if options.attention_type not in ATTENTION_TYPES:
            raise ConvertError(
                f"unknown attention type {options.attention_type!r}; use one of {', '.join(ATTENTION_TYPES)}."
            )
        config.attention_type = options.attention_type
    if options.block_size is not None:
        if options.block_size <= 0:
            raise ConvertError(f"the block size must be positive, not {options.block_size}.")
        config.block_size = options.block_size
    if options.num_random_blocks is not None:
        if options.num_random_blocks < 0:
            raise ConvertError(f"the number of random blocks can't be negative ({options.num_random_blocks}).")
        config.num_random_blocks = options.num_random_blocks
    max_positions = config.max_position_embeddings
    if config.max_position_embeddings % config.block_size:
        raise ConvertError(
            f"block size {config.block_size} does not divide the model's {max_positions} positions; "
            f"pick a divisor of {max_positions} (e.g. 16, 32 or 64)."
        )
    warnings = []
    if config.attention_type == "block_sparse":
        needed = (5 + 2 * config.num_random_blocks) * config.block_size
        if needed >= max_positions:
            warnings.append(
                f"block-sparse attention needs inputs longer than {needed} tokens but the model takes at most "
                f"{max_positions}: every input will run full attention."
            )
    if options.dtype is not None:
        if options.dtype not in DTYPES:
            raise ConvertError(f"unknown dtype {options.dtype!r}; use one of {', '.join(DTYPES)}.")
        # transformers 5 reads `dtype`, older versions `torch_dtype`: write both so either picks it up.
        config.torch_dtype = options.dtype
        config.dtype = options.dtype
    return warnings


def _check_destination(dst: Path, force: bool) -> None:
    """What can be refused about DST alone: before SRC is resolved, which for a Hub id downloads it."""
    given, dst = dst, dst.resolve()
    if dst == Path.cwd().resolve() or dst in Path.cwd().resolve().parents or dst.parent == dst:
        raise ConvertError(f"DST {given} is the current folder or above it; name a new folder to write.")
    if dst.exists() and not dst.is_dir():
        raise ConvertError(f"{dst} exists and is not a directory.")
    if dst.exists() and any(dst.iterdir()) and not force:
        raise ConvertError(f"{dst} already exists; pass --force to replace it.")
    if dst.exists():
        foreign = next((path for path in sorted(dst.iterdir()) if not _checkpoint_file(path)), None)
        if foreign is not None:  # --force on a home folder replaced all of it
            raise ConvertError(
                f"{dst} holds {foreign.name}, which is no checkpoint file: --force replaces only a checkpoint folder; "
                "name a new folder to write."
            )


def _cast(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` in `dtype`, refused where a finite weight would become inf there (float16 stops at 65504)."""
    cast = tensor.to(dtype)
    if tensor.device.type != "meta" and not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(tensor).all()):
        largest = float(tensor.abs().max())
        raise ConvertError(
            f"{name} holds {largest:.4g}, beyond what {str(dtype).removeprefix('torch.')} holds: keep float32, or "
            "use bfloat16, which has float32's range."
        )
    return cast


def _checkpoint_file(path: Path) -> bool:
    """Whether `path` is a file a checkpoint folder holds (what --force may replace along with the folder)."""
    name = path.name
    weights = re.fullmatch(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?", name)
    known = name in (*COPIED_FILES, "config.json", "README.md", ".gitattributes")
    return path.is_file() and not path.is_symlink() and bool(weights or known)


def _check_no_overlap(src: Path, dst: Path) -> None:
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConvertError(f"the destination {dst} overlaps the source {src}; convert to another directory.")


# --------------------------------------------------------------------------------------------------
# Tensors: dtype, shared storage, shards
# --------------------------------------------------------------------------------------------------
def _tied_checkpoint_names(config: ModelConfig) -> set[str]:
    """Checkpoint names that loaders restore by tying (an output layer tied to the embeddings, etc.).

    Read off our model classes' `tied` declarations and the name table of the config's model type, so nothing is
    hard-coded here; old aliases of those names count too. Empty when the config unties the embeddings.
    """
    if not getattr(config, "tie_word_embeddings", True):
        return set()
    from bigbird.models.architectures import classes_of

    table = TABLES[config.model_type]
    names = {alias for aliases in table.aliases.values() for alias in aliases}
    for cls in classes_of(config):
        for target, _ in cls.tied:
            name = translate(target, table)
            if name is not None:
                names.add(name)  # its aliases are in already
    return names


def _storage_key(tensor: torch.Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype]:
    return (
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )


def prepare_tensors(
    tensors: dict[str, torch.Tensor], config: ModelConfig, dtype: torch.dtype | None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Cast floating tensors to `dtype` and resolve tensors that share memory (safetensors stores no aliases).

    A tensor that aliases another is dropped when it is a tied name the loaders restore themselves; any other
    alias is stored as its own copy, so every name of the source survives. Returns (tensors, dropped names).
    """
    tied = _tied_checkpoint_names(config)
    groups: dict[tuple, list[str]] = {}
    for name, tensor in tensors.items():
        if tensor.device.type != "meta" and tensor.numel():
            groups.setdefault(_storage_key(tensor), []).append(name)
    alias_of: dict[str, str] = {}
    for names in groups.values():
        if len(names) > 1:
            keep = next((n for n in names if n not in tied), names[0])
            alias_of.update({n: keep for n in names if n != keep})
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    storages_kept: set[int] = set()
    for name, tensor in tensors.items():
        if name in alias_of and name in tied:
            dropped.append(name)
            continue
        storage = tensor.untyped_storage().data_ptr() if tensor.device.type != "meta" and tensor.numel() else None
        if dtype is not None and tensor.is_floating_point():
            tensor = _cast(name, tensor, dtype)
        if storage in storages_kept:
            # Another kept tensor uses this memory (an alias, or another view of it): store a copy.
            tensor = tensor.clone()
        elif storage is not None:
            storages_kept.add(storage)
        out[name] = tensor.contiguous()
    return out, dropped


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def plan_shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Names grouped into shards of at most `max_bytes`, in the source's order; a larger tensor gets its own."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        n = _nbytes(tensor)
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_weights(tensors: dict[str, torch.Tensor], directory: Path, max_bytes: int) -> list[Path]:
    """model.safetensors, or model-0000k-of-0000n.safetensors + model.safetensors.index.json above `max_bytes`."""
    shards = plan_shards(tensors, max_bytes)
    if len(shards) == 1:
        path = directory / "model.safetensors"
        write_safetensors(tensors, path)
        return [path]
    written, weight_map = [], {}
    for k, names in enumerate(shards, start=1):
        path = directory / f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors({n: tensors[n] for n in names}, path)
        weight_map.update({n: path.name for n in names})
        written.append(path)
    index = {"metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())}, "weight_map": weight_map}
    index_path = directory / "model.safetensors.index.json"
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [*written, index_path]


# --------------------------------------------------------------------------------------------------
# Verification: both directories through our models on one probe input
# --------------------------------------------------------------------------------------------------
def probe_inputs(config: ModelConfig, cls: type | None = None, batch: int = 1) -> dict[str, torch.Tensor]:
    """A fixed random input long enough to take the block-sparse path where the position table allows it, shaped
    for `cls`: decoder ids where its forward takes them, one `</s>` ending each input of a Pegasus classifier (it
    reads the decoder at the last one), and two choices per example for multiple choice."""
    seq_len = min(config.max_position_embeddings, (6 + 2 * config.num_random_blocks) * config.block_size)
    gen = torch.Generator().manual_seed(0)
    low = min(5, config.vocab_size - 1)
    ids = torch.randint(low, config.vocab_size, (batch, seq_len), generator=gen)
    name = "" if cls is None else cls.__name__
    takes = set(inspect.signature(cls.forward).parameters) if cls is not None else {"decoder_input_ids"}
    if config.model_type == "bigbird_pegasus" and name.endswith("SequenceClassification"):
        ids[:, -1] = config.eos_token_id
    if name.endswith("MultipleChoice"):
        ids = torch.stack([ids, ids.flip(-1)], dim=1)  # (batch, choices, seq)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if config.model_type == "bigbird_pegasus" and "decoder_input_ids" in takes:
        decoder = torch.randint(low, config.vocab_size, (batch, 8), generator=gen)
        decoder[:, 0] = config.decoder_start_token_id
        inputs["decoder_input_ids"] = decoder
    return inputs


def _output_tensors(out: Any) -> dict[str, torch.Tensor]:
    items = out.items() if isinstance(out, dict) else enumerate(out if isinstance(out, tuple) else (out,))
    return {str(k): v for k, v in items if isinstance(v, torch.Tensor) and v.is_floating_point()}


def verify(src: Path, dst: Path) -> dict[str, Any]:
    """Max |diff| between SRC and DST outputs (every floating output both give) on one probe input.

    Both run in float32 (our loaders' default), so the figure is what the conversion itself changed: the
    rounding of a dtype change, or the effect of a rewritten attention setting.
    """
    from bigbird.models.architectures import model_class_for

    src_config, dst_config = load_config(src), load_config(dst)
    cls = model_class_for(dst_config)
    inputs = probe_inputs(dst_config, cls)
    with torch.inference_mode():
        loaded = [
            cls.from_pretrained(d, config=c, dtype=torch.float32, strict=True)
            for d, c in ((src, src_config), (dst, dst_config))
        ]
        before, after = (_output_tensors(model(**inputs, return_dict=True)) for model in loaded)
    common = [k for k in before if k in after and before[k].shape == after[k].shape]
    if not common:
        raise ConvertError(f"{cls.__name__} gave no comparable outputs for SRC and DST.")
    diffs = {k: (before[k] - after[k]).abs().max().item() for k in common}
    scale = max(before[k].abs().max().item() for k in common)
    broken = [k for k, diff in diffs.items() if not math.isfinite(diff)]
    if broken:  # JSON has no NaN, and "max |diff| NaN" with exit 0 read as a pass
        raise ConvertError(f"--verify: SRC's and DST's {broken[0]} differ by {diffs[broken[0]]} (inf or NaN in one).")
    return {
        "model_class": cls.__name__,
        "probe_shape": list(inputs["input_ids"].shape),
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_by_output": diffs,
        "max_abs_output": scale,
    }


# --------------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------------
def convert(src: str | Path, dst: str | Path, options: ConvertOptions | None = None) -> dict[str, Any]:
    """Convert SRC (a Hub id or directory) into DST; returns the JSON-ready report of what was written.

    Every check that can fail (options, destination, config) runs before a tensor is read; the weights are
    then written to a temporary directory next to DST, which replaces DST in one rename at the end.
    """
    options = options or ConvertOptions()
    dst = Path(dst).expanduser()
    max_bytes = parse_size(options.max_shard_size)
    _check_destination(dst, options.force)
    source = resolve_checkpoint(src, revision=options.revision)
    _check_no_overlap(source, dst)
    if not (source / "config.json").is_file():
        raise ConvertError(f"{source} has no config.json, so it is not a checkpoint this toolkit can convert.")
    try:
        config = load_config(source)
    except ValueError as err:
        raise ConvertError(str(err)) from None
    warnings = rewrite_config(config, options)
    if options.revision is not None and Path(src).expanduser().is_dir():  # read as a folder, not from the Hub
        warnings.append(f"--revision {options.revision} names a Hub revision; {src} is a local folder, read as it is.")

    tensors = read_state_dict(source)
    tensors, dropped = prepare_tensors(tensors, config, DTYPES[options.dtype] if options.dtype else None)
    copied = [name for name in COPIED_FILES if (source / name).is_file()]
    if "spiece.model" not in copied and "tokenizer.json" not in copied:
        warnings.append(
            f"{src} has neither a spiece.model nor a tokenizer.json, so {dst} can't run summarize, qa, classify or "
            "mask: copy the tokenizer files of the checkpoint it was fine-tuned from into it."
        )
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    except OSError as err:
        raise ConvertError(f"{dst} can't be written: {err.strerror or err}.") from None
    try:
        written = write_weights(tensors, tmp, max_bytes)
        config.to_json_file(tmp / "config.json")
        for name in copied:
            shutil.copyfile(source / name, tmp / name)
        _normal_permissions(tmp)
        _replace(tmp, dst, options.force)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConvertError(f"{dst} can't be written: {err.strerror or err}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()})
    files = [dst / p.name for p in written] + [dst / "config.json"] + [dst / n for n in copied]
    report: dict[str, Any] = {
        "source": str(src),
        "source_dir": str(source),
        "destination": str(dst),
        "files": {str(p): p.stat().st_size for p in files},
        "total_bytes": sum(p.stat().st_size for p in files),
        "weights_bytes": sum(_nbytes(t) for t in tensors.values()),
        "shards": sum(1 for p in written if p.suffix == ".safetensors"),
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "parameters": sum(t.numel() for t in tensors.values()),
        "tensors": len(tensors),
        "dropped_tied": dropped,
        "model_type": config.model_type,
        "attention_type": config.attention_type,
        "block_size": config.block_size,
        "num_random_blocks": config.num_random_blocks,
    }
    if warnings:
        report["warnings"] = warnings
    if options.verify:
        try:
            report["verify"] = verify(source, dst)
        except (RuntimeError, ValueError, TypeError, CheckpointError) as err:  # say so, once: DST is there
            raise ConvertError(f"{dst} was written, but --verify could not run it: {describe(err)}.") from None
        check_verified(report, options, tensors)
    return report


def check_verified(report: dict[str, Any], options: ConvertOptions, tensors: dict[str, torch.Tensor]) -> None:
    """VerifyError when DST's outputs differ from SRC's by more than its dtype's tolerance. A rewritten attention
    setting changes the outputs on purpose: then the difference is reported, not judged."""
    checked = report["verify"]
    if options.attention_type is not None or options.block_size is not None or options.num_random_blocks is not None:
        checked["tolerance"] = None
        return
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()] or [torch.float32]
    dtype = max(floating, key=lambda d: torch.finfo(d).eps)  # the coarsest weights decide
    checked["tolerance"] = tolerance = verify_tolerance(dtype, checked["max_abs_output"])
    if checked["max_abs_diff"] > tolerance:
        name = str(dtype).removeprefix("torch.")
        raise VerifyError(
            f"--verify failed: {report['destination']}'s outputs differ from {report['source']}'s by"
            f" {checked['max_abs_diff']:.3g}, more than {name} rounding explains (tolerance {tolerance:.3g});"
            " the weights were written, but don't trust them",
            report,
        )


def _normal_permissions(directory: Path) -> None:
    """mkdtemp makes a private (0700) folder; the result is an ordinary one (0755 / 0644 under the umask)."""
    mask = umask()
    directory.chmod(0o777 & ~mask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~mask)


def _replace(tmp: Path, dst: Path, force: bool) -> None:
    """Move the finished `tmp` into place; an old DST (only with force) is moved aside first, removed last."""
    if not dst.exists():
        os.replace(tmp, dst)
        return
    if not any(dst.iterdir()):
        dst.rmdir()
        os.replace(tmp, dst)
        return
    if not force:
        raise ConvertError(f"{dst} already exists; pass --force to replace it.")
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old / dst.name, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
