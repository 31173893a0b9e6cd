"""Named model sizes beside the configs: the real architectures (for the benchmark, with random weights) and the
tiny ones the demo and the tests build. `config_from_name("bigbird-pegasus-large")` gives a ready config.

A preset is a config class and the fields that differ from its defaults; the defaults of `BigBirdConfig` and
`BigBirdPegasusConfig` are google/bigbird-roberta-base and google/bigbird-pegasus-large-* themselves.
"""

from __future__ import annotations

from typing import Any

from .config import BigBirdConfig, BigBirdPegasusConfig, ModelConfig

# The tiny models: a few thousand parameters, yet 256+ tokens take the block-sparse path (block size 16).
BIGBIRD_TINY: dict[str, Any] = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=1024,
    block_size=16,
    num_random_blocks=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
PEGASUS_TINY: dict[str, Any] = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=1024,
    block_size=16,
    num_random_blocks=2,
    dropout=0.0,
    num_beams=2,
    max_length=24,
    length_penalty=0.8,
)
# Vocabulary of a tiny preset built without a trained tokenizer (the tiny checkpoints size theirs to the vocab).
TINY_VOCAB = 400

PRESETS: dict[str, tuple[type[ModelConfig], dict[str, Any]]] = {
    "bigbird-roberta-base": (BigBirdConfig, {}),
    "bigbird-roberta-large": (
        BigBirdConfig,
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
    ),
    "bigbird-pegasus-large": (BigBirdPegasusConfig, {}),
    # A quarter-width stand-in for pegasus-large, for dry runs of the decoding scripts.
    "bigbird-pegasus-small": (
        BigBirdPegasusConfig,
        {
            "d_model": 256,
            "encoder_layers": 4,
            "decoder_layers": 4,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 1024,
            "decoder_ffn_dim": 1024,
            "dropout": 0.0,
        },
    ),
    "tiny": (BigBirdConfig, {**BIGBIRD_TINY, "vocab_size": TINY_VOCAB}),
    "tiny-pegasus": (BigBirdPegasusConfig, {**PEGASUS_TINY, "vocab_size": TINY_VOCAB}),
}


def config_from_name(name: str, **overrides: Any) -> ModelConfig:
    """The config of a named preset, with `overrides` on top; ValueError naming the presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}.")
    config_class, fields = PRESETS[name]
    return config_class(**{**fields, **overrides})
