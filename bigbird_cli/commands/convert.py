"""`bigbird convert`: a checkpoint (Hub id or directory) → a clean safetensors directory (bigbird.tools.convert)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer

from bigbird_cli.options import DType, Revision


class AttentionType(str, Enum):
    block_sparse = "block_sparse"
    original_full = "original_full"


def command(
    src: Annotated[
        str, typer.Argument(metavar="SRC", help="Hub model id or checkpoint directory.", show_default=False)
    ],
    dst: Annotated[str, typer.Argument(metavar="DST", help="Directory to write (must not exist, unless --force).")],
    dtype: Annotated[
        DType | None,
        typer.Option(help="The dtype to write the weights in [default: the checkpoint's].", show_default=False),
    ] = None,
    attention_type: Annotated[
        AttentionType | None, typer.Option(help="Rewrite config.json's attention type.", show_default=False)
    ] = None,
    block_size: Annotated[
        int | None, typer.Option(help="Rewrite the block size (must divide the position table).", show_default=False)
    ] = None,
    num_random_blocks: Annotated[
        int | None, typer.Option(help="Rewrite the number of random blocks (0 or more).", show_default=False)
    ] = None,
    max_shard_size: Annotated[
        str, typer.Option(help="Split the weights into shards of at most this size (e.g. 2GB, 500MB).")
    ] = "5GB",
    revision: Revision = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Load SRC and DST and report the max |diff| of their outputs.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace DST if it holds a checkpoint (and no other file).")
    ] = False,
) -> None:
    """Convert a checkpoint into a clean Hub-layout directory (model.safetensors, config, tokenizer files) that
    bigbird and transformers both load. Pickled weights are read with weights_only: a pickle that carries code
    is refused, never run. Tensor names are kept as they are. Prints one JSON object describing what it wrote.

    **Example:** bigbird convert google/bigbird-roberta-base ./roberta-fp16 --dtype float16 --verify
    """
    from bigbird.tools.convert import ConvertOptions, VerifyError, convert

    from ..console import warn

    options = ConvertOptions(
        dtype=dtype.value if dtype else None,
        attention_type=attention_type.value if attention_type else None,
        block_size=block_size,
        num_random_blocks=num_random_blocks,
        max_shard_size=max_shard_size,
        force=force,
        verify=verify,
        revision=revision,
    )
    try:
        report = convert(src, dst, options)
    except VerifyError as failed:  # the report still goes to stdout (its numbers are what the user checks);
        typer.echo(json.dumps(failed.report))  # errors.py's table says why and exits 1
        raise
    for message in report.get("warnings", []):
        warn(message)
    typer.echo(json.dumps(report))
