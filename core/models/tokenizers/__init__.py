"""BigBird and Pegasus tokenizers on sentencepiece, with character offsets into the original text.

* `pieces.py`: the sentencepiece core: added tokens, batched encoding with offsets, ids ↔ tokens, decoding;
* `framing.py`: the reference's rules on top: special tokens around a text or a pair, truncation, padding;
* `families.py`: what BigBird and Pegasus each declare (their special tokens, ids and framing);
* `training.py`: small sentencepiece models in each family's checkpoint layout.

The tests hold every call against the reference's sentencepiece ("slow") tokenizers and sentencepiece itself.
"""

from __future__ import annotations

from .families import BigBirdTokenizer, PegasusTokenizer
from .framing import BatchEncoding, SentencePieceTokenizer
from .pieces import TOKENIZER_FILES, AddedToken
from .training import train_bigbird_spm, train_pegasus_spm

# The tokenizer of each model type (config.json's `model_type`).
TOKENIZER_CLASSES: dict[str, type[SentencePieceTokenizer]] = {
    "big_bird": BigBirdTokenizer,
    "bigbird_pegasus": PegasusTokenizer,
}


def tokenizer_class(model_type: str) -> type[SentencePieceTokenizer]:
    """The tokenizer class checkpoints of this model type use."""
    return TOKENIZER_CLASSES[model_type]


__all__ = [
    "TOKENIZER_FILES",
    "AddedToken",
    "BatchEncoding",
    "BigBirdTokenizer",
    "PegasusTokenizer",
    "SentencePieceTokenizer",
    "tokenizer_class",
    "train_bigbird_spm",
    "train_pegasus_spm",
]
