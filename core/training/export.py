"""OUT_DIR: a checkpoint in the Hub layout that every task command and transformers' from_pretrained load.

config.json and the tokenizer files are written before training starts, so the inference Task that cuts the
training data into windows (and scores the dev set) reads exactly what the finished model will be read with:
`--max-length` is saved as the tokenizer's `model_max_length`, which is what bounds a task's windows.
model.safetensors (the best dev checkpoint, or the last weights without a dev set) and, for summarize,
generation_config.json are written at the end. The resumable state lives beside them in `checkpoint/`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigbird.models.config import GENERATION_FILE_KEYS, ModelConfig
from bigbird.tasks import ClassifyTask, QATask, SummarizeTask
from bigbird.tasks.base import Task, TaskError

from .data import Example, Skipped, TrainingError, classify_examples, qa_examples, summarize_examples

if TYPE_CHECKING:
    from bigbird.tasks.documents import Document

# loop.Trainer and loop.TrainSettings: loop imports this module, so naming them here would make an import circle.
Trainer = TrainSettings = Any


def state_file(output: Path) -> Path:
    return output / "checkpoint" / "state.pt"


def best_file(output: Path) -> Path:
    return output / "checkpoint" / "best.safetensors"


@dataclass(frozen=True)
class TaskKind:
    """How one task command's data becomes examples, and which inference Task reads it."""

    task_class: type[Task]
    options: Callable[[TrainSettings], dict[str, Any]]
    make_examples: Callable[[Trainer, list[Document], Skipped], tuple[list[Example], list[int]]]

    def load(self, settings: TrainSettings, trainer: Trainer) -> Task:
        """The inference Task over the prepared output (config and tokenizer only: the model is the trainer's)."""
        directory = settings.output if trainer.lead else trainer_scratch(trainer)
        try:
            return self.task_class(
                str(directory),
                dry_run=True,
                strategy=settings.strategy,
                device=settings.device,
                **self.options(settings),
            )
        except TaskError as exc:
            raise TrainingError(str(exc)) from None

    def examples(self, trainer: Trainer, docs: list[Document], skipped: Skipped) -> tuple[list[Example], list[int]]:
        return self.make_examples(trainer, docs, skipped)


def trainer_scratch(trainer: Trainer) -> Path:
    """A worker other than the first reads the config and tokenizer from its own copy (it writes no OUT_DIR)."""
    return trainer.scratch


def _max_target(trainer: Trainer) -> int:
    return trainer.settings.max_target_tokens or int(trainer.model.config.max_length)


TASKS: dict[str, TaskKind] = {
    "classify": TaskKind(
        ClassifyTask,
        lambda s: {"text_pair_field": s.text_pair_field},
        lambda t, docs, skipped: classify_examples(t.task, docs, t.labels, t.settings.fields, skipped),
    ),
    "qa": TaskKind(
        QATask,
        lambda s: {"question_field": s.question_field, "doc_stride": s.doc_stride},
        lambda t, docs, skipped: qa_examples(t.task, docs, t.settings.fields, skipped),
    ),
    "summarize": TaskKind(
        SummarizeTask,
        lambda s: {},
        lambda t, docs, skipped: summarize_examples(t.task, docs, t.settings.fields, _max_target(t), skipped),
    ),
}
HEADS = {name: kind.task_class.heads for name, kind in TASKS.items()}


def prepare_output(directory: Path, base: Path, config: ModelConfig, architecture: str, max_length: int | None) -> None:
    """config.json and the tokenizer files, before training (see the module docstring)."""
    from bigbird.models.tokenizers import load_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "checkpoint").mkdir(exist_ok=True)
    config = config.copy()
    config.architectures = [architecture]
    config.save_pretrained(directory)
    try:
        tokenizer = load_tokenizer(base, config.model_type)  # spiece.model, else tokenizer.json
    except Exception as exc:
        raise TrainingError(f"{base}: the tokenizer can't be loaded ({exc}).") from None
    if max_length is not None:
        positions = int(config.max_position_embeddings)
        if max_length > positions:
            raise TrainingError(f"--max-length {max_length} is more than the model's {positions} positions.")
        tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(directory)
    if config.model_type == "bigbird_pegasus":
        settings = {key: getattr(config, key) for key in GENERATION_FILE_KEYS if hasattr(config, key)}
        _write_json({k: v for k, v in settings.items() if v is not None}, directory / "generation_config.json")


def scratch_copy(base: Path, config: ModelConfig, architecture: str, max_length: int | None) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="bigbird-finetune-"))
    prepare_output(directory, base, config, architecture, max_length)
    return directory


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def export(trainer: Trainer) -> None:
    """model.safetensors: the best dev checkpoint's weights, or the last ones without a dev set."""
    output = trainer.settings.output
    best = best_file(output)
    target = output / "model.safetensors"
    if trainer.best is not None and best.is_file():
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(best, tmp)
        os.replace(tmp, target)
    else:
        trainer._save_weights(target)
