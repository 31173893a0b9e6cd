"""The random start of a model's weights, and skipping it for the weights a checkpoint is about to overwrite.

`from_pretrained` used to build the model at random and then copy the checkpoint over it: for pegasus-large,
drawing 570 M random numbers took 9 of the 10 seconds of a load (AMD EPYC 26/2/1), paid by every `bigbird`
command. Built inside `skipping_init()`, the layers whose start is random (`Linear`, `Embedding` and the models'
`init_weights`) leave their memory as allocated; the loader then fills every weight, and draws only those the
checkpoint lacks (a new head), by the same rule a random model's weights follow (`init_parameter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from torch import nn

_SKIPPING = ContextVar("skipping_init", default=False)


@contextlib.contextmanager
def skipping_init() -> Iterator[None]:
    """Build modules without their random start: every weight must then be loaded or `init_parameter`ed."""
    token = _SKIPPING.set(True)
    try:
        yield
    finally:
        _SKIPPING.reset(token)


def init_skipped() -> bool:
    """Whether modules built now leave their random start out (inside `skipping_init`)."""
    return _SKIPPING.get()


def initializer_std(config: Any) -> float:
    """The standard deviation of a config's random weights (BigBird's initializer_range, Pegasus's init_std)."""
    return getattr(config, "initializer_range", None) or getattr(config, "init_std", 0.02)


def init_parameter(module: nn.Module, name: str, std: float) -> None:
    """One of `module`'s own parameters as a model starts: normal(0, std) for linear and embedding weights (an
    embedding's padding row zero), zero biases, unit norms; any other parameter keeps what its module built."""
    param = getattr(module, name)
    if isinstance(module, nn.Linear):
        nn.init.normal_(param, std=std) if name == "weight" else nn.init.zeros_(param)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(param, std=std)
        if module.padding_idx is not None:
            param.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(param) if name == "weight" else nn.init.zeros_(param)


class Embedding(nn.Embedding):
    """nn.Embedding whose random start is left out inside `skipping_init` (its table is loaded next)."""

    def reset_parameters(self) -> None:
        if not init_skipped():
            super().reset_parameters()
