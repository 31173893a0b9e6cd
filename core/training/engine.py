"""`--engine ray`: the same training loop, data-parallel on Ray Train's TorchTrainer.

Every worker builds the same model from the same seed and runs `Trainer` with its rank: it takes every world-th
example of each global batch, and before clipping the workers' gradients are summed with one all-reduce (gloo on
CPUs, nccl on GPUs), each loss having been weighted by its share of the whole global batch. So every worker takes
the optimizer step a single process would take on the whole batch (up to the order of float additions), and
worker 0 alone scores the dev set and writes the checkpoints, the log and OUT_DIR, which makes `--resume` the
same as a local run's. OUT_DIR must be a path every worker's machine sees the same (one machine, or a shared
file system).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..models.heap import reuse_freed_memory, reuse_large_blocks
from .data import TrainingError
from .loop import Progress, Summary, Trainer, TrainSettings

MISSING = "--engine ray needs Ray Train (pip install 'bigbird-cli[ray]', which installs ray[train])."


def _require_ray_train() -> Any:
    try:
        import ray
        import ray.train.torch  # noqa: F401
    except ImportError:
        raise TrainingError(MISSING) from None
    return ray


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    """Sum `tensors` over the workers in place, in one collective call."""
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def _summary_file(settings: TrainSettings) -> Path:
    return settings.output / "checkpoint" / "summary.json"


def _worker_loop(config: dict[str, Any]) -> None:
    from ray import train

    context = train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    settings: TrainSettings = config["settings"]
    reuse_freed_memory()  # as the CLI's own process does, and training's large blocks too (core/models/heap.py)
    reuse_large_blocks()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    trainer = Trainer(settings, rank=rank, world=world, reduce=_all_reduce)
    trainer.prepare()
    summary = trainer.fit()
    if rank == 0:  # the driver reads it back: what a worker returns does not reach it through Ray Train
        data = {**dataclasses.asdict(summary), "output": str(summary.output)}
        _summary_file(settings).write_text(json.dumps(data), encoding="utf-8")


def finetune_on_ray(
    settings: TrainSettings, workers: int, address: str | None = None, progress: Progress | None = None
) -> Summary:
    """Train with `workers` Ray Train workers (on the cluster at `address`, or a local Ray)."""
    settings.check()  # bad options fail before Ray starts
    settings.check_output()
    ray = _require_ray_train()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        # The workers' and Ray Train's own messages stay in Ray's logs: progress is --log's (worker 0 writes it).
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if progress is not None:
        progress({"event": "ray", "workers": workers})
    gpu = settings.device.startswith("cuda")
    cpus = max(1, settings.threads or 1)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"settings": settings},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpus}),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="bigbird-ray-train-"), name="finetune"),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # a worker's TrainingError comes back wrapped: say its sentence
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, TrainingError) or "TrainingError" in str(exc):
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else str(exc)
            raise TrainingError(message.split("TrainingError: ")[-1]) from None
        raise
    del result
    data = json.loads(_summary_file(settings).read_text(encoding="utf-8"))
    data["output"] = settings.output
    return Summary(**data)
