"""bigbird-cli core: configs, attention, models, tokenizers, generation, checkpoint I/O and task logic.

Names are imported on first use (PEP 562), so that `bigbird --help` and shell completion don't pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    ".bigbird": [
        "BigBirdForCausalLM",
        "BigBirdForMaskedLM",
        "BigBirdForMultipleChoice",
        "BigBirdForPreTraining",
        "BigBirdForQuestionAnswering",
        "BigBirdForSequenceClassification",
        "BigBirdForTokenClassification",
        "BigBirdModel",
    ],
    ".pegasus": [
        "BigBirdPegasusForCausalLM",
        "BigBirdPegasusForConditionalGeneration",
        "BigBirdPegasusForQuestionAnswering",
        "BigBirdPegasusForSequenceClassification",
        "BigBirdPegasusModel",
    ],
    ".config": ["BigBirdConfig", "BigBirdPegasusConfig", "load_config"],
    ".checkpoints": ["CheckpointError", "resolve_checkpoint"],
    ".generation": ["DecoderCache"],
    ".tokenizers": ["BigBirdTokenizer", "PegasusTokenizer"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
