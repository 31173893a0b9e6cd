"""The tasks behind the CLI's subcommands, usable from Python on their own.

from bigbird.tasks.documents import Document
from bigbird.tasks import SummarizeTask
task = SummarizeTask("google/bigbird-pegasus-large-arxiv")
records = task([Document("a", "mine", long_text)])
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "Task": ".base",
    "TaskError": ".base",
    "ClassifyTask": ".classify",
    "MaskTask": ".mask",
    "QATask": ".qa",
    "SummarizeTask": ".summarize",
    "Record": ".records",
    "error_record": ".records",
    "make_record": ".records",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the CLI's help and completion don't pay for importing torch.
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'bigbird.tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__  # what tab completion offers: the tasks, not this module's own imports
