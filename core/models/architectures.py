"""Our model classes by the names checkpoints give them (config.json's `architectures`), in one table.

Every lookup of a model class by name goes through here: the tasks (which head a checkpoint needs), convert
(the class a config names, the names restored by tying), and the tiny checkpoints.
"""

from __future__ import annotations

from . import bigbird, pegasus
from .config import ModelConfig
from .modeling import PretrainedModel

MODEL_CLASSES: dict[str, type[PretrainedModel]] = {
    cls.__name__: cls
    for module in (bigbird, pegasus)
    for cls in vars(module).values()
    if isinstance(cls, type)
    and issubclass(cls, PretrainedModel)
    and cls.__module__ == module.__name__
    and not cls.__name__.endswith("PretrainedModel")
}
# The class a checkpoint loads as when its config names none we have: the one that uses every weight.
DEFAULT_CLASS = {"big_bird": "BigBirdModel", "bigbird_pegasus": "BigBirdPegasusForConditionalGeneration"}


def model_class(name: str) -> type[PretrainedModel]:
    """The class of this name (`BigBirdForMaskedLM`, ...); KeyError with the known names otherwise."""
    try:
        return MODEL_CLASSES[name]
    except KeyError:
        raise KeyError(f"no model class {name!r}; known: {', '.join(sorted(MODEL_CLASSES))}") from None


def model_class_for(config: ModelConfig) -> type[PretrainedModel]:
    """The class a config names in `architectures` if we have it, else its model type's default class."""
    for name in config.architectures or []:
        if name in MODEL_CLASSES:
            return MODEL_CLASSES[name]
    return MODEL_CLASSES[DEFAULT_CLASS[config.model_type]]


def classes_of(config: ModelConfig) -> list[type[PretrainedModel]]:
    """Every class that loads checkpoints of this config's kind."""
    return [cls for cls in MODEL_CLASSES.values() if cls.config_class is type(config)]
