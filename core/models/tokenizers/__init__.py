"""BigBird and Pegasus tokenizers with character offsets into the original text, on either of two backends.

* `pieces.py`: the sentencepiece core: added tokens, batched encoding with offsets, ids <-> tokens, decoding;
* `fast.py`: the same core on Hugging Face's tokenizers (a tokenizer.json, or a spiece.model converted);
* `framing.py`: the reference's rules on top of either: special tokens around a text or a pair, truncation, padding;
* `families.py`: what BigBird and Pegasus each declare (their special tokens, ids and framing), on each backend;
* `loading.py`: which file a checkpoint's ids come from, and the checks that a tokenizer belongs to its model;
* `training.py`: small sentencepiece models in each family's checkpoint layout.

The tests hold every call against the reference's tokenizers (sentencepiece and fast, transformers 4 and 5) and
sentencepiece itself.
"""

from __future__ import annotations

from .families import BigBirdTokenizer, BigBirdTokenizerFast, PegasusTokenizer, PegasusTokenizerFast
from .fast import TokenizersTokenizer
from .framing import BatchEncoding, SentencePieceTokenizer
from .loading import TokenizerMismatch, config_mismatch, load_tokenizer, load_tokenizer_file, tokenizer_file
from .pieces import TOKENIZER_FILES, AddedToken, VocabularyError
from .training import train_bigbird_spm, train_pegasus_spm

# The sentencepiece tokenizer of each model type (config.json's `model_type`).
TOKENIZER_CLASSES: dict[str, type[SentencePieceTokenizer]] = {
    "big_bird": BigBirdTokenizer,
    "bigbird_pegasus": PegasusTokenizer,
}


def tokenizer_class(model_type: str) -> type[SentencePieceTokenizer]:
    """The sentencepiece tokenizer class checkpoints of this model type use."""
    return TOKENIZER_CLASSES[model_type]


__all__ = [
    "TOKENIZER_FILES",
    "AddedToken",
    "BatchEncoding",
    "BigBirdTokenizer",
    "BigBirdTokenizerFast",
    "PegasusTokenizer",
    "PegasusTokenizerFast",
    "SentencePieceTokenizer",
    "TokenizerMismatch",
    "TokenizersTokenizer",
    "VocabularyError",
    "config_mismatch",
    "load_tokenizer",
    "load_tokenizer_file",
    "tokenizer_class",
    "tokenizer_file",
    "train_bigbird_spm",
    "train_pegasus_spm",
]
