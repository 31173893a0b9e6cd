"""`bigbird bench --task tokenize`: each tokenizer file of a checkpoint folder timed on one text, tokenized as the
tasks tokenize a document (`encode_document`: piece by piece, with every token's character span).

The contenders are the files the folder holds, each loaded through `load_tokenizer_file` (spiece.model through the
family's sentencepiece class, tokenizer.json through its tokenizers class, with the folder's settings and added
tokens), so a folder with both files puts them side by side in one run, called in turn round after round so that
whatever else the machine does hits both alike. Measuring and the records are `bench.py`'s; this module only
loads and times (it imports nothing of bench.py, which imports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bigbird.models.tokenizers import load_tokenizer_file
from bigbird.models.tokenizers.loading import FAMILIES, SOURCES
from bigbird.tasks.base import Encoding, encode_document

# The model type a tokenizer class belongs to, for a folder without config.json (a tokenizer saved alone).
FAMILY_BY_CLASS = {cls.__name__: model_type for model_type, classes in FAMILIES.items() for cls in classes}


def folder_family(directory: Path) -> str | None:
    """The model type whose tokenizer classes read this folder: config.json's `model_type`, else (a tokenizer
    saved without a model) the class its tokenizer_config.json names; None when that is not one of ours."""
    model_type = _read_field(directory / "config.json", "model_type")
    if model_type is not None:
        return model_type if model_type in FAMILIES else None
    named = _read_field(directory / "tokenizer_config.json", "tokenizer_class")
    return FAMILY_BY_CLASS.get(named) if named else None


def _read_field(path: Path, key: str) -> str | None:
    """A string field of a JSON object file; None when the file, the field or a string is missing."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def folder_tokenizers(directory: Path, model_type: str) -> dict[str, Any]:
    """Each tokenizer file the folder holds (spiece.model, tokenizer.json), loaded as that file alone is read."""
    return {name: load_tokenizer_file(directory, model_type, name) for name in SOURCES if (directory / name).is_file()}


@dataclass
class Timed:
    """One contender's timed calls and what its first call gave."""

    seconds: list[float] = field(default_factory=list)
    encoding: Encoding | None = None


def time_tokenizers(tokenizers: dict[str, Any], text: str, repeat: int, warmup: int) -> dict[str, Timed]:
    """`warmup` untimed then `repeat` timed rounds, each calling every tokenizer once on the whole text in turn."""
    timed = {name: Timed() for name in tokenizers}
    for round_ in range(warmup + repeat):
        for name, tokenizer in tokenizers.items():
            start = time.perf_counter()
            encoding = encode_document(tokenizer, text)
            seconds = time.perf_counter() - start
            if round_ >= warmup:
                timed[name].seconds.append(seconds)
            if timed[name].encoding is None:
                timed[name].encoding = encoding
    return timed


def same_encoding(a: Encoding, b: Encoding) -> bool:
    """The same ids with the same character spans."""
    return np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets)


@contextlib.contextmanager
def on_cores(threads: int | None) -> Iterator[int]:
    """Run the block on the first `threads` of this process's cores (all of them when None); yields the count.

    Both libraries size their thread pools by themselves (sentencepiece per call, tokenizers once per process),
    and neither reads torch's setting; pinning the process's CPU affinity holds both to the same cores, however
    many threads they start."""
    if not hasattr(os, "sched_getaffinity"):
        if threads:
            raise OSError("--threads with --task tokenize needs Linux's CPU affinity, which this system lacks")
        yield os.cpu_count() or 1
        return
    cores = sorted(os.sched_getaffinity(0))
    if not threads or threads >= len(cores):
        yield len(cores)
        return
    os.sched_setaffinity(0, cores[:threads])
    try:
        yield threads
    finally:
        os.sched_setaffinity(0, cores)
