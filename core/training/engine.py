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
import sys
import tempfile
from typing import Any

import torch

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


def _worker_loop(config: dict[str, Any]) -> None:
    from ray import train

    from .progress import reporter

    context = train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    settings: TrainSettings = config["settings"]
    progress = reporter(sys.stderr) if rank == 0 and not config["quiet"] else None
    trainer = Trainer(settings, progress, rank=rank, world=world, reduce=_all_reduce)
    trainer.prepare()
    summary = trainer.fit()
    train.report({"summary": dataclasses.asdict(summary) if rank == 0 else None})


def finetune_on_ray(
    settings: TrainSettings, workers: int, address: str | None = None, progress: Progress | None = None
) -> Summary:
    """Train with `workers` Ray Train workers (on the cluster at `address`, or a local Ray)."""
    settings.check()  # bad options fail before Ray starts
    ray = _require_ray_train()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    gpu = settings.device.startswith("cuda")
    cpus = max(1, settings.threads or 1)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"settings": settings, "quiet": progress is None},
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
    data = dict(result.metrics["summary"])
    data["output"] = settings.output
    return Summary(**data)
