"""The evaluation report: means over documents, seeded bootstrap intervals, and the per-document plot.

Scored records carry `reference` and `metrics` (per-document percentages); failed ones carry `error`. The report
averages each metric over the scored documents and gives a 95% percentile bootstrap interval: documents are
resampled with replacement and the metric recomputed, with a fixed seed so the same records give the same
interval on every run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import EvalError, TaskMetrics, confusion_matrix

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def bootstrap_interval(
    count: int,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float]:
    """The 95% percentile interval of `statistic(indices)` over `resamples` draws of `count` document indices."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, count, count)) for _ in range(resamples)]
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def build_report(metrics: TaskMetrics, model: str, records: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict:
    """The JSON report of scored records: {"task", "model", "documents", "failed", "metrics", "intervals",
    "settings"}, plus "confusion_matrix" for classify."""
    scored = [record for record in records if "error" not in record and "metrics" in record]
    values = {name: np.array([record["metrics"][name] for record in scored]) for name in metrics.per_document}
    golds = [record["reference"] for record in scored]
    predictions = [record[metrics.prediction_field] for record in scored]

    def corpus_statistic(metric: Callable[[Sequence[Any], Sequence[Any]], float]) -> Callable[[np.ndarray], float]:
        return lambda idx: metric([golds[i] for i in idx], [predictions[i] for i in idx])

    statistics: dict[str, Callable[[np.ndarray], float]] = {
        name: (lambda idx, column=column: float(column[idx].mean())) for name, column in values.items()
    }
    statistics |= {name: corpus_statistic(metric) for name, metric in metrics.corpus.items()}
    all_indices = np.arange(len(scored))
    report: dict[str, Any] = {
        "task": metrics.task,
        "model": model,
        "documents": len(records),
        "failed": len(records) - len(scored),
        "metrics": {name: (statistic(all_indices) if scored else None) for name, statistic in statistics.items()},
        "intervals": {
            name: (bootstrap_interval(len(scored), statistic) if scored else None)
            for name, statistic in statistics.items()
        },
        "settings": {**settings, "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}},
    }
    if metrics.task == "classify":
        report["confusion_matrix"] = confusion_matrix(golds, predictions)
    return report


def require_matplotlib(error: type[Exception] = EvalError) -> Any:
    """matplotlib.pyplot on the non-interactive backend, or `error` (the calling command's) with the install hint:
    matplotlib is an optional extra that both `eval --plot` and `bench --plot` use."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise error("--plot needs matplotlib: pip install 'bigbird-cli[plot]'.") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def require_plot(path: str | Path, error: type[Exception] = EvalError) -> None:
    """Refuse a --plot path the figure can't be saved to, before anything runs: matplotlib missing, a folder, a
    folder that does not exist or can't be written, or a format matplotlib does not write (it would otherwise fail,
    or silently add `.png`, after the whole run)."""
    require_matplotlib(error)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise error(f"--plot {path} is a folder: give a file name such as {path / 'plot.png'}.")
    if not folder.is_dir():
        raise error(f"--plot {path}: the folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise error(f"--plot {path}: the folder {folder} can't be written to.")
    if path.suffix.lower().lstrip(".") not in formats:
        raise error(f"--plot {path}: give a file ending in one of {', '.join('.' + f for f in sorted(formats))}.")


def plot(metrics: TaskMetrics, records: Sequence[dict[str, Any]], path: str | Path) -> None:
    """The headline metric per document: its distribution, and against input length (where long documents lose
    quality)."""
    plt = require_matplotlib()
    name = metrics.headline
    scored = [record for record in records if "error" not in record and "metrics" in record]
    scores = [record["metrics"][name] for record in scored]
    lengths = [record.get("input_tokens") or 0 for record in scored]
    fig, (ax_hist, ax_len) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_hist.hist(scores, bins=20, range=(0, 100))
    ax_hist.set(xlabel=f"{name} per document", ylabel="documents", title=f"{metrics.task}: {name} distribution")
    ax_len.scatter(lengths, scores, s=12, alpha=0.6)
    ax_len.set(xlabel="input tokens", ylabel=name, ylim=(-2, 102), title=f"{name} against input length")
    for ax in (ax_hist, ax_len):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
