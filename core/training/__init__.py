"""Fine-tuning BigBird and BigBirdPegasus on the task commands' inputs (`bigbird finetune`).

from bigbird.training import TrainSettings, finetune
from bigbird.tasks.documents import Inputs
finetune(TrainSettings("classify", "google/bigbird-roberta-base", Path("out"), Inputs(jsonl=["train.jsonl"])))

`data.py` turns documents into examples in the inference windows, `loop.py` is the training loop and its
checkpoints, `scoring.py` the dev-set scores, `export.py` the Hub-layout output, `engine.py` Ray Train.
"""

from .data import Fields, LabelSet, TrainingError
from .loop import Summary, Trainer, TrainSettings, finetune

__all__ = ["Fields", "LabelSet", "Summary", "TrainSettings", "Trainer", "TrainingError", "finetune"]
