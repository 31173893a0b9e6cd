"""What every model class shares: output objects, activations, weight init, and from/save_pretrained."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .config import ModelConfig, apply_generation_config
from .initialization import init_parameter, init_skipped, initializer_std, skipping_init
from .linear import Linear

log = logging.getLogger(__name__)


class ModelOutput(dict):
    """A model's outputs by the seed's names, readable as attributes (`out.logits`) or keys (`out["logits"]`).

    Fields that were not computed are None, so `out.loss` exists whether or not labels were given. By position
    (`out[0]`, `to_tuple()`) only the computed ones count, in order: `loss` first when labels were given, as the
    reference's tuples are laid out.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        """The computed fields, in order (what `return_dict=False` returns)."""
        return tuple(value for value in self.values() if value is not None)


# glibc serves blocks over 32 MiB (its largest mmap threshold) as fresh pages, faulted in on every call and
# handed back on free. A long input's feed-forward intermediate, (B, T, 4H), is far larger; computed in slices
# of tokens under this many elements it comes from memory the allocator keeps, and the peak drops too.
FFN_SLICE_ELEMENTS = 4 * 2**20


def device_available(device: torch.device) -> bool:
    """Whether this machine has `device` (torch builds a cuda or mps device object even where there is none)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return True


def _float_type(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A model's dtype argument as a torch type, or ValueError in one sentence: a name torch doesn't know, or a type
    the weights can't take (int8 is `quantize`, not a dtype)."""
    if dtype is None:
        return None
    found = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise ValueError(f"dtype {str(dtype)!r} is no floating-point torch type: float32, bfloat16 or float16.")
    return found


def available_device(device: str | torch.device, name: str = "device") -> torch.device:
    """`device` as a torch device this machine has, or ValueError in one sentence naming the argument as the
    caller knows it (`name`: from_pretrained's `device`, the commands' `--device`)."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} takes cpu, cuda, cuda:N or mps, not {str(device)!r}.") from None
    if not device_available(found):
        raise ValueError(f"{name} {device}: no such device is available on this machine.")
    return found


def feed_forward_in_slices(ffn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, width: int) -> torch.Tensor:
    """`ffn(x)` for a token-wise feed-forward over (B, T, H) whose hidden layer is `width` wide, in token slices."""
    tokens = max(1, FFN_SLICE_ELEMENTS // (x.shape[0] * width))
    if x.shape[1] <= tokens:
        return ffn(x)
    return torch.cat([ffn(part) for part in x.split(tokens, dim=1)], dim=1)


# Config fields a call's keyword arguments of the same name override (`return_dict` is the third).
OUTPUT_OPTIONS = ("output_hidden_states", "output_attentions")
# Set while a model's forward runs, so that the models it calls inside know they are not the one the user called.
_INSIDE_A_MODEL: contextvars.ContextVar[bool] = contextvars.ContextVar("inside_a_model", default=False)


class PretrainedModel(nn.Module):
    """Base of every model class: random init from a config, and loading/saving in the Hub layout.

    Subclasses set `config_class`, whose model_type also picks the name table in checkpoints.py.
    """

    config_class: ClassVar[type[ModelConfig]]
    # Parameters that share storage with another one, as (ours, source): saved once, restored on load.
    tied: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def __call__(self, *args: Any, return_dict: bool | None = None, **kwargs: Any) -> Any:
        """The forward pass; `return_dict=False` gives its computed outputs as a tuple, as the reference does.

        An output option the call leaves out (or passes as None) is the config's, as the seed documents it
        (`from_pretrained(path, output_hidden_states=True)`, or the field in config.json). The config's
        `return_dict` only counts for the model the user called: a head reads its inner model's outputs by name.
        """
        for key in OUTPUT_OPTIONS:
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
                if getattr(self.config, key):
                    kwargs[key] = True
        outermost = not _INSIDE_A_MODEL.get()
        token = _INSIDE_A_MODEL.set(True)
        try:
            out = super().__call__(*args, **kwargs)
        finally:
            _INSIDE_A_MODEL.reset(token)
        if return_dict is None and outermost:
            return_dict = self.config.return_dict
        return out.to_tuple() if return_dict is False and isinstance(out, ModelOutput) else out

    def init_weights(self) -> None:
        """Every parameter's random start (`initialization.init_parameter`), left out for a model built to be
        loaded (`skipping_init`), and the tied parameters tied."""
        if not init_skipped():
            std = initializer_std(self.config)
            for module in self.modules():
                for name, _ in module.named_parameters(recurse=False):
                    init_parameter(module, name, std)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Point each tied parameter at its source (e.g. the MLM decoder at the word embeddings)."""
        if not getattr(self.config, "tie_word_embeddings", True):
            return
        for target, source in self.tied:
            owner_name, _, attr = target.rpartition(".")
            owner = self.get_submodule(owner_name)
            if isinstance(owner, Linear):
                owner.shares_weight = True  # packed, it keeps a copy beside the shared matrix
            setattr(owner, attr, self.get_parameter(source))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        config: ModelConfig | None = None,
        strict: bool = False,
        torch_dtype: torch.dtype | str | None = None,
        **config_overrides: Any,
    ):
        """Load a Hub id or a local checkpoint directory; the model comes back in eval mode.

        As in the reference, a head the checkpoint lacks starts from random weights, with a warning naming them
        (a classifier on google/bigbird-roberta-base, to fine-tune), and keyword arguments set config fields
        (`num_labels=3`, `problem_type=...`). `strict` refuses that instead: the tasks load with it, since a
        random head gives meaningless records. `torch_dtype` is the reference's older name for `dtype`.
        """
        from .checkpoints import load_weights, resolve_checkpoint

        dtype = _float_type(dtype if dtype is not None else torch_dtype)  # checked before anything is downloaded
        device = None if device is None else available_device(device)
        directory = resolve_checkpoint(name_or_path, revision=revision)
        config = config or cls.read_config(directory)
        if config_overrides:
            config = config.copy()
            for key, value in config_overrides.items():
                setattr(config, key, value)
            config.check(source=f"{cls.__name__}.from_pretrained's arguments")
        with skipping_init():  # every weight is loaded next, or drawn there where the checkpoint lacks it
            model = cls(config)
        missing = load_weights(model, directory, strict=strict)
        if missing:
            log.warning(
                "%s: %s has no %s in the checkpoint: initialised at random, to be trained.",
                name_or_path,
                cls.__name__,
                ", ".join(missing),
            )
        if dtype is not None:
            model.to(dtype=dtype)
        if device is not None:
            model.to(device)
        return model.eval()

    @classmethod
    def read_config(cls, directory: Path) -> ModelConfig:
        """config.json, with generation_config.json's settings over it."""
        return apply_generation_config(cls.config_class.from_json_file(directory / "config.json"), directory)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors under the checkpoint's tensor names."""
        from .checkpoints import save_weights

        Path(directory).mkdir(parents=True, exist_ok=True)
        config = self.config.copy()
        config.architectures = [type(self).__name__]
        config.save_pretrained(directory)
        save_weights(self, directory)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
