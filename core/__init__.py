"""bigbird: the library behind bigbird-cli (the repository's core/ folder), in three layers:

* `bigbird.models`: configs and presets, the attention, the linear layer, the two model families, generation,
  tokenizers and checkpoint I/O: everything that turns token ids into numbers the reference would give;
* `bigbird.tasks`: documents in, records out: reading inputs, chunking, the four tasks;
* `bigbird.tools`: what `bigbird convert` and `bigbird bench` run, and the tiny random checkpoints.

`bigbird.tasks` and `bigbird.tools` build on `bigbird.models`, which imports neither. Every public name is importable
from `bigbird` directly.

Names are imported on first use (PEP 562), so that `bigbird --help` and shell completion don't pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    ".models.bigbird": [
        "BigBirdForCausalLM",
        "BigBirdForMaskedLM",
        "BigBirdForMultipleChoice",
        "BigBirdForPreTraining",
        "BigBirdForQuestionAnswering",
        "BigBirdForSequenceClassification",
        "BigBirdForTokenClassification",
        "BigBirdModel",
    ],
    ".models.pegasus": [
        "BigBirdPegasusForCausalLM",
        "BigBirdPegasusForConditionalGeneration",
        "BigBirdPegasusForQuestionAnswering",
        "BigBirdPegasusForSequenceClassification",
        "BigBirdPegasusModel",
    ],
    ".models.config": ["BigBirdConfig", "BigBirdPegasusConfig", "ConfigError", "load_config"],
    ".models.checkpoints": ["CheckpointError", "resolve_checkpoint"],
    ".models.generation": ["DecoderCache"],
    ".models.tokenizers": ["BigBirdTokenizer", "BigBirdTokenizerFast", "PegasusTokenizer", "PegasusTokenizerFast"],
    ".models.linear": ["Linear", "quantize_int8"],
    ".models.heap": ["reuse_freed_memory"],
    ".tasks.documents": ["Document"],
    ".tasks.base": ["Task", "TaskError"],
    ".tasks.summarize": ["SummarizeTask"],
    ".tasks.qa": ["QATask"],
    ".tasks.classify": ["ClassifyTask"],
    ".tasks.mask": ["MaskTask"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'bigbird' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
