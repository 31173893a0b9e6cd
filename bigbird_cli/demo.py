"""`make demo`: the main job end to end with no network — summarize the documents in examples/ to JSONL.

Real checkpoints can't be downloaded everywhere (CI, air-gapped machines), so the demo generates a small
BigBirdPegasus checkpoint locally: random weights in the Hub layout, with a sentencepiece vocabulary trained on the
example texts. Everything else is the real thing: the same `bigbird summarize` command, reader, chunking, beam
search and JSONL writer. The summaries are gibberish, and the demo says so.

    python -m bigbird_cli.demo [--output-dir demo-output]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .console import info, warn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REAL_COMMAND = "bigbird summarize examples/ -o summaries.jsonl"

# Small enough to build in seconds; a 384-token window so the longer examples are summarized in chunks.
DEMO_CONFIG = {"max_position_embeddings": 384, "max_length": 24, "num_beams": 2, "no_repeat_ngram_size": 3}


def make_demo_model(directory: Path) -> Path:
    """A random-weight BigBirdPegasus summarizer whose vocabulary is trained on the example texts."""
    from bigbird.tools.tiny import CORPUS, make_tiny_checkpoint

    texts = [path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.rglob("*")) if path.is_file()]
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    return make_tiny_checkpoint(
        directory, "pegasus", "conditional_generation", seed=0, vocab_size=600, corpus=lines + CORPUS, **DEMO_CONFIG
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bigbird_cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"), help="where the model and JSONL go")
    args = parser.parse_args(argv)

    from .app import app

    model = args.output_dir / "demo-model"
    output = args.output_dir / "summaries.jsonl"
    warn(
        "this demo uses a small RANDOM-WEIGHT BigBirdPegasus model generated on this machine (no network needed), "
        "so its summaries are meaningless text. It shows the pipeline, not the model's quality."
    )
    info(f"building the demo model in {model} ...")
    make_demo_model(model)
    examples = EXAMPLES.relative_to(Path.cwd()) if EXAMPLES.is_relative_to(Path.cwd()) else EXAMPLES
    command = ["summarize", f"{examples}/", "--model", str(model), "--batch-size", "2", "-o", str(output)]
    info("running: bigbird " + " ".join(command))
    try:
        app(command, prog_name="bigbird")
    except SystemExit as done:
        code = int(done.code or 0)
    else:
        code = 0
    if output.exists():
        sys.stdout.write(output.read_text(encoding="utf-8"))
        info(f"wrote {output} (one JSON record per document).")
    info(f"With the real model (google/bigbird-pegasus-large-arxiv, downloaded once from the Hub): {REAL_COMMAND}")
    return code


if __name__ == "__main__":
    sys.exit(main())
