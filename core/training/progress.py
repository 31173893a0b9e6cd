"""What a run says on stderr: a rich progress bar (loss, learning rate, last dev score) on a terminal, one plain
line per step when stderr is a file or a pipe (a log reads better without redrawn bars)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO


def _dev_text(scores: dict[str, float] | None) -> str:
    return " ".join(f"{name} {value:.4g}" for name, value in (scores or {}).items())


def reporter(stream: TextIO) -> Callable[[dict[str, Any]], None]:
    """A `progress` callback for `finetune`, drawing on `stream`."""
    return _RichReporter(stream) if stream.isatty() else _PlainReporter(stream)


class _PlainReporter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def say(self, text: str) -> None:
        print(f"finetune: {text}", file=self.stream, flush=True)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.say(start_text(event))
        elif kind == "step":
            dev = f" dev {_dev_text(event['dev'])}" if "dev" in event else ""
            self.say(f"step {event['step']}/{event['total']} loss {event['loss']:.4f} lr {event['lr']:.3g}{dev}")
        elif kind == "saved":
            self.say(f"saved the state at step {event['step']}")
        elif kind == "ray":
            self.say(f"training on Ray with {event['workers']} workers; each step and dev score goes to --log")


def start_text(event: dict[str, Any]) -> str:
    text = f"{event['examples']} training examples, {event['total']} steps"
    if event["step"]:
        text += f", resuming after step {event['step']}"
    if event["skipped"]:
        text += f"; documents left out: {event['skipped']}"
    if event["dev"] or event["dev_skipped"]:
        text += f"; {event['dev']} dev documents"
        if event["dev_skipped"]:
            text += f" (left out: {event['dev_skipped']})"
    return text


class _RichReporter:
    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console

        self.console = Console(file=stream)
        self.bar: Any = None
        self.dev = ""

    def __call__(self, event: dict[str, Any]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        kind = event["event"]
        if kind == "ray":
            self.console.print(
                f"finetune: training on Ray with {event['workers']} workers; each step and dev score goes to --log"
            )
        elif kind == "start":
            self.console.print(f"finetune: {start_text(event)}")
            self.bar = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"), console=self.console, transient=False,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("train", total=event["total"], completed=event["step"], status="")
        elif kind == "step" and self.bar is not None:
            if "dev" in event:
                self.dev = f" dev {_dev_text(event['dev'])}"
            status = f"loss {event['loss']:.4f} lr {event['lr']:.2e}{self.dev}"
            self.bar.update(self.task, completed=event["step"], status=status)
        elif kind == "done" and self.bar is not None:
            self.bar.stop()
