"""The fine-tuning loop: AdamW, linear warm-up and decay, gradient accumulation and clipping, dev scoring, and
checkpoints that make a stopped run resumable to the same bits.

What makes a run reproducible and resumable:

* the data order of epoch e is a permutation drawn from (seed, e), and step k reads the k-th global batch of
  it, so the data position is the step number alone;
* the random numbers a step uses (dropout, the block-sparse random plan drawn in training) come from the global
  torch generator seeded from (seed, step, worker) before each micro-batch, so they too follow from the step,
  on any worker, after any restart;
* a checkpoint (`checkpoint/state.pt`, written to a temporary file and renamed into place) holds the model, the
  optimizer and scheduler, the step, the best dev score and the torch generator's state.

With several workers (`engine.py`) every worker runs this same loop on its share of each global batch; their
gradients are summed (`reduce`) before clipping, so every worker takes the same optimizer step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigbird.models.heap import release_free_heap
from bigbird.models.linear import Linear
from bigbird.tasks.documents import Document, Inputs

from .data import SINGLE, Example, Fields, LabelSet, Skipped, TrainingError, label_folders
from .export import HEADS, TASKS, best_file, export, prepare_output, scratch_copy, state_file
from .scoring import DevSet

TASK_NAMES = tuple(TASKS)
# Random numbers of step k on worker r come from a generator seeded with a hash of (seed, k, r).
Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainSettings:
    """Everything one fine-tuning run is told (the CLI's options, one to one)."""

    task: str
    model: str
    output: Path
    train: Inputs
    dev: Inputs | None = None
    fields: Fields = field(default_factory=Fields)
    question_field: str = "question"
    text_pair_field: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    threads: int | None = None
    batch_size: int = 8
    accumulate: int = 1
    epochs: int = 3
    max_steps: int | None = None
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    max_length: int | None = None
    strategy: str = "chunk"
    doc_stride: int | None = None
    max_target_tokens: int | None = None
    gradient_checkpointing: bool = False
    eval_steps: int | None = None
    save_steps: int | None = None
    resume: bool = False
    log: Path | None = None

    def check(self) -> None:
        """A bad option is one sentence before anything is read or loaded."""
        if self.task not in TASK_NAMES:
            raise TrainingError(f"finetune trains {', '.join(TASK_NAMES)}, not {self.task!r}.")
        for name in ("batch_size", "accumulate", "epochs", "max_steps", "eval_steps", "save_steps", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, not {value}.")
        if not self.learning_rate > 0:
            raise TrainingError(f"--learning-rate must be above 0, not {self.learning_rate}.")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainingError(f"--warmup-ratio takes 0 to 1 (excluded), not {self.warmup_ratio}.")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise TrainingError(f"--dtype takes float32 or bfloat16, not {self.dtype!r}.")
        if self.dtype == "float16" and self.device == "cpu":
            raise TrainingError("--dtype float16 trains on a GPU only; on the CPU use bfloat16.")
        if self.strategy not in ("chunk", "truncate"):
            raise TrainingError(f"--strategy takes chunk or truncate, not {self.strategy!r}.")
        if self.train.is_empty():
            raise TrainingError("no training data: give --jsonl FILE, --dataset NAME or (classify) a folder.")
        if self.task != "classify" and (self.train.paths or (self.dev and self.dev.paths)):
            wanted = {"qa": "question and answer", "summarize": "reference summary"}[self.task]
            raise TrainingError(
                f"finetune {self.task} can't train on folders: a file has no {wanted}; give --jsonl or --dataset."
            )
        missing = self.train.missing() + (self.dev.missing() if self.dev else [])
        if missing:
            raise TrainingError(f"{missing[0]} does not exist.")

    def check_output(self) -> None:
        """A fresh run writes into an empty or new OUT_DIR only (the driver checks, before any worker starts)."""
        if not self.resume and self.output.exists() and (not self.output.is_dir() or any(self.output.iterdir())):
            raise TrainingError(f"{self.output} is not empty: give another -o, or --resume to continue the run in it.")

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the stopped one to end where it would have."""
        keys = (
            "task",
            "model",
            "batch_size",
            "accumulate",
            "epochs",
            "max_steps",
            "learning_rate",
            "weight_decay",
            "warmup_ratio",
            "max_grad_norm",
            "seed",
            "max_length",
            "strategy",
            "doc_stride",
            "dtype",
        )
        return {key: getattr(self, key) for key in keys}


@dataclass
class Summary:
    """What a finished run reports."""

    steps: int
    examples: int
    skipped: str
    dev_skipped: str
    best: dict[str, Any] | None
    output: Path
    problem_type: str | None = None
    labels: list[str] | None = None


def step_seed(seed: int, step: int, rank: int) -> int:
    key = f"{seed}\0{step}\0{rank}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    generator = torch.Generator().manual_seed(step_seed(seed, epoch, -1))
    return torch.randperm(n, generator=generator).tolist()


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """The learning rate's factor at each step: up from 0 over `warmup` steps, then down to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases and LayerNorm weights are left alone, as BERT's recipe does."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if param.ndim < 2 or name.endswith("bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def checkpoint_layers(model: torch.nn.Module) -> int:
    """Recompute each transformer layer in the backward pass instead of keeping its activations (memory ≈ one
    layer's instead of all of them). The random numbers a layer drew are drawn again the same (torch restores
    the generator), so dropout and the random plan match.

    The heap's free pages go back to the OS after each layer's forward and after each layer's backward
    (`release_free_heap`): the CLI keeps freed blocks under 32 MiB for reuse (heap.reuse_freed_memory), and
    between one layer's scratch and the next the long-lived tensors (saved layer inputs, gradients) leave holes
    the next layer's blocks don't fit, so the process grew by over a GB more than the live tensors
    (bigbird-roberta-base, 4096 tokens). Handed back, a layer's pages are faulted in again by the next one: a
    few seconds a step, where checkpointing is chosen for memory anyway."""
    from torch.utils.checkpoint import checkpoint

    count = 0
    for module in model.modules():
        if type(module).__name__ in ("BigBirdLayer", "EncoderLayer", "DecoderLayer"):
            module.forward = functools.partial(_recomputed_layer, functools.partial(checkpoint, module.forward))
            count += 1
    return count


def _recomputed_layer(forward: Callable[..., Any], hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """A checkpointed layer's forward, handing the heap's free pages back after it and after its backward (which
    ends where the gradient of its input is made). Not where no gradient is tracked (dev scoring, generation):
    nothing is recomputed there, and a decoding step would pay for it on every layer."""
    if not torch.is_grad_enabled():
        return forward(hidden, *args, use_reentrant=False, **kwargs)
    if hidden.requires_grad:
        hidden.register_hook(_release_heap_then_pass)
    out = forward(hidden, *args, use_reentrant=False, **kwargs)
    release_free_heap()
    return out


def _release_heap_then_pass(grad: torch.Tensor) -> torch.Tensor:
    release_free_heap()
    return grad


@contextlib.contextmanager
def unpacked(model: torch.nn.Module) -> Iterator[None]:
    """Inference inside training keeps every Linear's weight the Parameter the optimizer holds, and adds no
    copies: a layer that chose oneDNN's packed layout would replace it with a new one (or, tied, keep a copy that
    the next optimizer step makes stale)."""
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    allowed = [layer.may_pack for layer in layers]
    for layer in layers:
        layer.may_pack = False
    try:
        yield
    finally:
        for layer, was in zip(layers, allowed, strict=True):
            layer.may_pack = was


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Trainer:
    """One run of `settings`: `prepare` reads the data and builds the model, `fit` trains, `export` writes OUT_DIR.

    `rank`/`world` and `reduce` are the data-parallel hooks (engine.py): worker `rank` of `world` takes every
    world-th example of each global batch, and `reduce` sums a list of tensors over the workers in place.
    Only worker 0 scores the dev set and writes files.
    """

    def __init__(
        self,
        settings: TrainSettings,
        progress: Progress | None = None,
        *,
        rank: int = 0,
        world: int = 1,
        reduce: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> None:
        settings.check()
        self.settings = settings
        self.progress = progress or (lambda event: None)
        self.rank, self.world, self.reduce = rank, world, reduce
        self.lead = rank == 0

    # Setup ----------------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        from bigbird.models.architectures import model_class
        from bigbird.models.checkpoints import CheckpointError, resolve_checkpoint
        from bigbird.models.config import apply_generation_config, load_config

        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        state_path = state_file(s.output)
        self.resumed = torch.load(state_path, weights_only=False) if s.resume and state_path.is_file() else None
        if self.resumed is not None and self.resumed["fingerprint"] != s.fingerprint():
            changed = [k for k, v in s.fingerprint().items() if self.resumed["fingerprint"].get(k) != v]
            raise TrainingError(f"--resume needs the stopped run's options; --{changed[0].replace('_', '-')} differs.")
        try:
            base = resolve_checkpoint(s.model)
            config = apply_generation_config(load_config(base), base)
        except (CheckpointError, ValueError, OSError) as exc:
            raise TrainingError(f"{s.model} can't be used ({exc}).") from None
        if config.model_type not in HEADS[s.task]:
            raise TrainingError(
                f"finetune {s.task} needs a {' or '.join(HEADS[s.task])} checkpoint, and {s.model} is "
                f"a {config.model_type} model."
            )

        base_labels = dict(config.id2label)
        self.train_docs = list(self._documents(s.train))
        self.labels = None
        if s.task == "classify":
            self.labels = LabelSet.from_values(d.fields.get(s.fields.label) for d in self.train_docs if not d.error)
            config.id2label = self.labels.id2label
            config.problem_type = self.labels.problem_type
        config.output_hidden_states = config.output_attentions = False
        config.return_dict = True
        cls = model_class(HEADS[s.task][config.model_type])
        if self.lead:
            prepare_output(s.output, base, config, cls.__name__, s.max_length)
        else:
            self.scratch = scratch_copy(base, config, cls.__name__, s.max_length)
        self.task = TASKS[s.task].load(s, self)

        torch.manual_seed(s.seed)  # a new head's random init is the seed's
        try:
            self.model = self._load_model(cls, base, config, base_labels)
        except Exception as exc:
            raise TrainingError(f"{s.model}: the {cls.__name__} weights can't be loaded ({exc}).") from None
        self.model.train()
        if s.gradient_checkpointing:
            checkpoint_layers(self.model)
        self.takes_question_lengths = "question_lengths" in self.model.forward.__code__.co_varnames

        self.skipped = Skipped()
        self.examples, _ = TASKS[s.task].examples(self, self.train_docs, self.skipped)
        if not self.examples:
            raise TrainingError(f"no training example could be made ({self.skipped.describe() or 'no documents'}).")
        self.dev = DevSet.build(self, list(self._documents(s.dev))) if s.dev is not None and self.lead else None

        self.global_batch = s.batch_size * s.accumulate
        self.steps_per_epoch = math.ceil(len(self.examples) / self.global_batch)
        self.total = s.max_steps or s.epochs * self.steps_per_epoch
        self.eval_steps = s.eval_steps or self.steps_per_epoch
        self.save_steps = s.save_steps or self.steps_per_epoch
        warmup = math.floor(s.warmup_ratio * self.total)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, s.weight_decay), lr=s.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(warmup, self.total))
        self.step = 0
        self.best: dict[str, Any] | None = None
        if self.resumed is not None:
            self._restore(self.resumed)

    def _load_model(self, cls: Any, base: Path, config: Any, base_labels: dict[int, str]) -> torch.nn.Module:
        """The base's weights in the head class; a classifier of other labels keeps its body and gets a new head
        (the old one's rows name other labels)."""
        from bigbird.models.checkpoints import BODY_PREFIXES

        if config.id2label == base_labels or self.settings.task != "classify":
            return cls.from_pretrained(base, config=config, strict=False, device=self.settings.device)
        model = cls(config)
        donor_config = config.copy()
        donor_config.id2label = base_labels
        donor = cls.from_pretrained(base, config=donor_config, strict=False)
        body = {k: v for k, v in donor.state_dict().items() if k.startswith(BODY_PREFIXES)}
        model.load_state_dict(body, strict=False)
        model.tie_weights()
        return model.to(self.settings.device)

    def _documents(self, inputs: Inputs) -> Iterator[Document]:
        s = self.settings
        wanted = (s.fields.label, s.fields.answer, s.fields.reference, s.question_field, s.text_pair_field)
        extra = tuple(dict.fromkeys(f for f in (*inputs.extra_fields, *wanted) if f))
        docs = dataclasses.replace(inputs, extra_fields=extra).open()
        return label_folders(docs, inputs.paths, s.fields.label) if s.task == "classify" else docs

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        self.step, self.best = state["step"], state["best"]

    # The loop -------------------------------------------------------------------------------------------------

    def fit(self) -> Summary:
        s = self.settings
        self._trim_log()
        self.progress(
            {
                "event": "start",
                "step": self.step,
                "total": self.total,
                "examples": len(self.examples),
                "skipped": self.skipped.describe(),
                "dev": self.dev.size if self.dev else 0,
                "dev_skipped": self.dev.skipped.describe() if self.dev else "",
            }
        )
        while self.step < self.total:
            loss = self.train_step()
            self.step += 1
            lr = self.scheduler.get_last_lr()[0]
            entry: dict[str, Any] = {
                "step": self.step,
                "epoch": self.step / self.steps_per_epoch,
                "loss": loss,
                "lr": lr,
            }
            if self.dev is not None and (self.step % self.eval_steps == 0 or self.step == self.total):
                entry["dev"] = self.evaluate()
            self._log(entry)
            self.progress({"event": "step", "total": self.total, "best": self.best, **entry})
            if self.step % self.save_steps == 0 or self.step == self.total:
                self.save()
        if self.lead:
            export(self)
        return Summary(
            steps=self.step,
            examples=len(self.examples),
            skipped=self.skipped.describe(),
            dev_skipped=self.dev.skipped.describe() if self.dev else "",
            best=self.best,
            output=s.output,
            problem_type=self.labels.problem_type if self.labels else None,
            labels=self.labels.names if self.labels else None,
        )

    def global_batch_of(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.settings.seed, epoch, len(self.examples))
        return order[position * self.global_batch : (position + 1) * self.global_batch]

    def train_step(self) -> float:
        """One optimizer step over the global batch of `self.step`: this worker's share of it in micro-batches, each
        loss weighted by its share of the global batch, the gradients summed over workers, clipped, applied."""
        s = self.settings
        batch = self.global_batch_of(self.step)
        mine = batch[self.rank :: self.world]
        size = max(1, math.ceil(s.batch_size / self.world))
        total = torch.zeros(())
        for k, start in enumerate(range(0, len(mine), size)):
            examples = [self.examples[i] for i in mine[start : start + size]]
            torch.manual_seed(step_seed(s.seed, self.step, self.rank * 1_000_003 + k))
            loss = self.loss(examples)
            weighted = loss * (len(examples) / len(batch))
            weighted.backward()
            total += weighted.detach().float().cpu()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.reduce is not None:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            self.reduce([*grads, total])
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total)

    def loss(self, examples: list[Example]) -> torch.Tensor:
        from .data import collate

        s = self.settings
        problem_type = self.labels.problem_type if self.labels else SINGLE
        batch = collate(examples, s.task, problem_type, self.task.tokenizer.pad_token_id)
        if not self.takes_question_lengths:
            batch.pop("question_lengths", None)
        batch = {k: v.to(s.device) for k, v in batch.items()}
        with self.autocast():
            return self.model(**batch).loss

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.settings.dtype
        if dtype in ("bfloat16", "float16"):
            return torch.autocast(torch.device(self.settings.device).type, dtype=getattr(torch, dtype))
        return contextlib.nullcontext()

    def evaluate(self) -> dict[str, float]:
        """Score the dev set with the inference task and `bigbird eval`'s metrics; keep the best weights."""
        assert self.dev is not None
        self.model.eval()
        try:
            with unpacked(self.model), torch.no_grad(), self.autocast():
                scores = self.dev.score(self)
        finally:
            self.model.train()
        headline = scores[self.dev.headline]
        better = self.best is None or (
            headline < self.best["score"] if self.dev.lower_is_better else headline > self.best["score"]
        )
        if better:
            self.best = {"step": self.step, "metric": self.dev.headline, "score": headline}
            self._save_weights(best_file(self.settings.output))
        return scores

    # Files ----------------------------------------------------------------------------------------------------

    def _save_weights(self, path: Path) -> None:
        """The weights, written whole or not at all (write_safetensors writes beside the file and renames)."""
        from bigbird.models.checkpoints import checkpoint_state_dict, write_safetensors

        write_safetensors(checkpoint_state_dict(self.model), path)

    def save(self) -> None:
        """The resumable state, written whole or not at all (a temporary file renamed into place)."""
        if not self.lead:
            return
        state = {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "position": self.step % self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            "best": self.best,
            "fingerprint": self.settings.fingerprint(),
        }
        _atomic_save(state, state_file(self.settings.output))
        self.progress({"event": "saved", "step": self.step})

    def _log(self, entry: dict[str, Any]) -> None:
        if self.lead and self.settings.log is not None:
            with open(self.settings.log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    def _trim_log(self) -> None:
        """A resumed run's log keeps the lines up to its checkpoint: those after it are written again."""
        log = self.settings.log
        if not self.lead or log is None or not log.is_file():
            return
        if not self.settings.resume:
            log.unlink()
            return
        kept = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                break  # a line cut by the kill, and whatever follows it
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, log)


def finetune(settings: TrainSettings, progress: Progress | None = None) -> Summary:
    """Train `settings.model` on `settings.train` and write the result to `settings.output` (see Trainer)."""
    trainer = Trainer(settings, progress)
    settings.check_output()
    started = time.perf_counter()
    trainer.prepare()
    summary = trainer.fit()
    if progress is not None:
        progress({"event": "done", "seconds": time.perf_counter() - started})
    return summary
