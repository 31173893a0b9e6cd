"""The tasks behind the CLI's subcommands, usable from Python on their own.

from core.documents import Document
from core.tasks import SummarizeTask
task = SummarizeTask("google/bigbird-pegasus-large-arxiv")
records = task([Document("a", "mine", long_text)])
"""

from .base import Task, TaskError
from .classify import ClassifyTask
from .mask import MaskTask
from .qa import QATask
from .records import Record, error_record, make_record
from .summarize import SummarizeTask

__all__ = [
    "ClassifyTask",
    "MaskTask",
    "QATask",
    "Record",
    "SummarizeTask",
    "Task",
    "TaskError",
    "error_record",
    "make_record",
]
