"""Model configurations, read from and written to a Hub `config.json`.

A config is a flat bag of fields with the seed's names and defaults. Keys we do not know are kept in
`extra` and written back unchanged, so a round trip through this toolkit never loses what another tool
put in the file.
"""

from __future__ import annotations

import collections
import copy
import json
from pathlib import Path
from typing import Any, ClassVar

# The attention layouts a config may name: the reference refuses any other, and so do we.
ATTENTION_TYPES = ("block_sparse", "original_full")

# Fields every model config carries, whatever the family (the Hub's common keys).
COMMON_DEFAULTS: dict[str, Any] = {
    "architectures": None,
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "problem_type": None,
    "torch_dtype": None,
    # What a forward call returns when it does not say (the seed: "or when config.output_hidden_states=True").
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
}


class ConfigError(ValueError):
    """A config.json this toolkit can't build a model from; the message names the field."""


# Fields that must be positive whole numbers for a model to be built at all.
POSITIVE_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "block_size",
    "decoder_attention_heads",
    "decoder_layers",
)


class ModelConfig:
    """Base of the family configs: defaults, aliases, labels, and JSON I/O."""

    model_type: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # Other names a field is known by (Pegasus calls hidden_size `d_model`).
    aliases: ClassVar[dict[str, str]] = {}

    def __init__(self, **kwargs: Any) -> None:
        self.extra: dict[str, Any] = {}
        for key, value in {**COMMON_DEFAULTS, **self.defaults}.items():
            object.__setattr__(self, key, copy.deepcopy(value))
        id2label = kwargs.pop("id2label", None)
        num_labels = kwargs.pop("num_labels", None)
        kwargs.pop("label2id", None)  # always derived from id2label
        kwargs.pop("model_type", None)
        for key, value in kwargs.items():
            setattr(self, key, value)
        if id2label is not None:
            try:
                self.id2label = {int(k): v for k, v in dict(id2label).items()}
            except (TypeError, ValueError):
                raise ConfigError("id2label must map label numbers (0, 1, ...) to names.") from None
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        if num_labels is not None and num_labels != len(self.id2label):
            self.num_labels = num_labels

    def check(self, source: str = "config.json") -> ModelConfig:
        """Refuse values no model can be built from, naming the field and where it came from (`source`), before
        any weights are read (a zero block size or a gap in the labels would otherwise fail per document, far from
        its cause)."""
        for key in POSITIVE_INT_FIELDS:
            if not self._known(key) and key not in type(self).aliases:
                continue
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{source}: {key} must be a positive whole number, not {value!r}.")
        heads = {"num_attention_heads": self.num_attention_heads}
        if self._known("decoder_attention_heads"):
            heads["decoder_attention_heads"] = self.decoder_attention_heads
        for key, count in heads.items():
            if self.hidden_size % count:
                raise ConfigError(f"{source}: hidden_size {self.hidden_size} is not divisible by {key} {count}.")
        if self._known("attention_type") and self.attention_type not in ATTENTION_TYPES:
            names = " or ".join(ATTENTION_TYPES)
            raise ConfigError(f"{source}: attention_type must be {names}, not {self.attention_type!r}.")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError(f"{source}: id2label must number its labels 0 to n-1, not {sorted(self.id2label)}.")
        return self

    # Attribute access ---------------------------------------------------------------------------
    def _known(self, key: str) -> bool:
        return key in COMMON_DEFAULTS or key in self.defaults

    def __setattr__(self, key: str, value: Any) -> None:
        key = type(self).aliases.get(key, key)
        if key in ("extra", "id2label") or self._known(key) or isinstance(getattr(type(self), key, None), property):
            object.__setattr__(self, key, value)
        else:
            self.extra[key] = value

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails: aliases first, then keys kept from the file.
        aliases = type(self).aliases
        if key in aliases:
            return getattr(self, aliases[key])
        extra = self.__dict__.get("extra", {})
        if key in extra:
            return extra[key]
        raise AttributeError(f"{type(self).__name__} has no field {key!r}")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        self.id2label = {i: f"LABEL_{i}" for i in range(n)}

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    def label_names(self) -> list[str]:
        """The labels by id, a name given to more than one id followed by the id ("pos (0)", "pos (1)"): records
        map names to scores, and two labels under one name would lose one of them."""
        names = [self.id2label[i] for i in range(self.num_labels)]
        counts = collections.Counter(names)
        return [f"{name} ({i})" if counts[name] > 1 else name for i, name in enumerate(names)]

    # Serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for key in {**COMMON_DEFAULTS, **self.defaults}:
            out[key] = copy.deepcopy(getattr(self, key))
        out["id2label"] = {str(i): label for i, label in self.id2label.items()}
        out["label2id"] = self.label2id
        out["model_type"] = self.model_type
        return {k: out[k] for k in sorted(out) if out[k] is not None or k not in COMMON_DEFAULTS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelConfig:
        """A config.json read into this class; ConfigError in one sentence when it is not there or describes
        another family's model (whose weights would then be reported missing one by one)."""
        data = _read_json(_config_file(Path(path)))
        found = data.get("model_type")
        if cls.model_type and found is not None and found != cls.model_type:
            raise ConfigError(
                f"{Path(path).parent} holds a {found} checkpoint, and {cls.__name__} reads {cls.model_type} ones."
            )
        return cls.from_dict(data).check()

    def save_pretrained(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.to_json_file(Path(directory) / "config.json")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None) -> ModelConfig:
        from .checkpoints import resolve_checkpoint

        return cls.from_json_file(resolve_checkpoint(name_or_path, revision=revision) / "config.json")

    def copy(self) -> ModelConfig:
        return type(self).from_dict(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"


class BigBirdConfig(ModelConfig):
    """Configuration of the BigBird encoder family (google/bigbird-roberta-base and its heads)."""

    model_type = "big_bird"
    defaults = {
        "vocab_size": 50358,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 4096,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "use_cache": True,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "sep_token_id": 66,
        "attention_type": "block_sparse",
        "use_bias": True,
        "rescale_embeddings": False,
        "block_size": 64,
        "num_random_blocks": 3,
        "classifier_dropout": None,
        # Ours: how random blocks are planned ("hf" reproduces transformers, "seeded" google-research).
        "random_plan": "hf",
    }


# Generation settings a Hub config.json (or generation_config.json) may carry.
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "num_beams": 1,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "repetition_penalty": 1.0,
    "early_stopping": False,
    "num_return_sequences": 1,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
}
# Sampling settings: not config fields, but generation_config.json may carry them; the reference's defaults.
SAMPLING_DEFAULTS: dict[str, Any] = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0}
# What generation_config.json may set over config.json.
GENERATION_FILE_KEYS = (
    *GENERATION_DEFAULTS,
    *SAMPLING_DEFAULTS,
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
)


def apply_generation_config(config: ModelConfig, directory: str | Path) -> ModelConfig:
    """Put generation_config.json's settings (when the file exists) over the config's, as the Hub does.

    This is the only reader of generation_config.json: what a generate call does not set comes from the config
    this returns (see `generation.resolve_generation_settings`).
    """
    path = Path(directory) / "generation_config.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in GENERATION_FILE_KEYS:
            if key in data:
                setattr(config, key, data[key])
    return config


class BigBirdPegasusConfig(ModelConfig):
    """Configuration of the BigBirdPegasus encoder-decoder (google/bigbird-pegasus-large-*)."""

    model_type = "bigbird_pegasus"
    aliases = {
        "num_attention_heads": "encoder_attention_heads",
        "hidden_size": "d_model",
        "attention_probs_dropout_prob": "attention_dropout",
        "num_hidden_layers": "encoder_layers",
    }
    defaults = {
        "vocab_size": 96103,
        "max_position_embeddings": 4096,
        "encoder_layers": 16,
        "encoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
        "decoder_layers": 16,
        "decoder_ffn_dim": 4096,
        "decoder_attention_heads": 16,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "use_cache": True,
        "is_encoder_decoder": True,
        "activation_function": "gelu_new",
        "d_model": 1024,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "init_std": 0.02,
        "decoder_start_token_id": 2,
        "classifier_dropout": 0.0,
        "scale_embedding": True,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "attention_type": "block_sparse",
        "block_size": 64,
        "num_random_blocks": 3,
        "use_bias": False,
        "random_plan": "hf",
        **GENERATION_DEFAULTS,
    }


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {
    BigBirdConfig.model_type: BigBirdConfig,
    BigBirdPegasusConfig.model_type: BigBirdPegasusConfig,
}


def load_config(directory: str | Path) -> ModelConfig:
    """Read `config.json` in a checkpoint directory into the config class its `model_type` names (ConfigError in one
    sentence when the directory or its config.json is not there)."""
    data = _read_json(_config_file(Path(directory) / "config.json"))
    model_type = data.get("model_type")
    if model_type not in CONFIG_CLASSES:
        raise ConfigError(
            f"{directory}: config.json has model_type {model_type!r}; expected one of {sorted(CONFIG_CLASSES)}."
        )
    return CONFIG_CLASSES[model_type].from_dict(data).check()


def _config_file(path: Path) -> Path:
    """`path` (a folder's config.json) where it is a file; else ConfigError saying the folder is not a checkpoint."""
    if not path.is_file():
        where = "does not exist" if not path.parent.exists() else "has no config.json"
        raise ConfigError(f"{path.parent} {where}, so it is not a checkpoint this toolkit can read.")
    return path


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{Path(path).name} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{Path(path).name} holds a JSON {type(data).__name__}, not an object.")
    return data
