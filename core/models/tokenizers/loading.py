"""Which file a checkpoint's ids come from, and the checks that catch a tokenizer that doesn't belong to its model
before any document is read.

`spiece.model` when the folder has one (the checkpoint's original sentencepiece model: the reference's
sentencepiece tokenizers give the same ids), else `tokenizer.json` (what transformers 5 saves). A folder with both
(Google's pegasus repos ship a tokenizer.json converted from their spiece.model) must agree on the ids of ordinary
text: same number of ids, the same piece at every id. Special tokens spelled differently by a converter, or a
tokenizer.json without the model's normalizer, are not a mismatch of ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .families import BigBirdTokenizer, BigBirdTokenizerFast, PegasusTokenizer, PegasusTokenizerFast
from .fast import TokenizersTokenizer
from .framing import SentencePieceTokenizer

# The tokenizer classes of each model type (config.json's `model_type`): sentencepiece, then tokenizers.
FAMILIES: dict[str, tuple[type[SentencePieceTokenizer], type[TokenizersTokenizer]]] = {
    "big_bird": (BigBirdTokenizer, BigBirdTokenizerFast),
    "bigbird_pegasus": (PegasusTokenizer, PegasusTokenizerFast),
}
# Config fields that name a special token's id, by the tokenizer's role for it.
CONFIG_ROLES = {"pad": "pad_token_id", "eos": "eos_token_id", "sep": "sep_token_id"}
# The files a folder's ids can come from, the one served first.
SOURCES = ("spiece.model", "tokenizer.json")


class TokenizerMismatch(ValueError):
    """The tokenizer files don't fit each other or the model; the message is one sentence naming the files."""


def tokenizer_file(directory: str | Path) -> str | None:
    """The file a checkpoint folder's ids come from: spiece.model, else tokenizer.json, else None."""
    directory = Path(directory)
    return next((name for name in SOURCES if (directory / name).is_file()), None)


def load_tokenizer(directory: str | Path, model_type: str) -> SentencePieceTokenizer | TokenizersTokenizer:
    """The tokenizer of a checkpoint folder, from the file `tokenizer_file` names; a spiece.model and a
    tokenizer.json that would give different ids are a TokenizerMismatch."""
    directory = Path(directory)
    source = tokenizer_file(directory)
    if source is None:
        raise FileNotFoundError(f"{directory} has neither a spiece.model nor a tokenizer.json.")
    tokenizer = load_tokenizer_file(directory, model_type, source)
    if source == "spiece.model" and (directory / "tokenizer.json").is_file():
        problem = different_ids(tokenizer, load_tokenizer_file(directory, model_type, "tokenizer.json"))
        if problem:
            raise TokenizerMismatch(
                f"{directory}: its spiece.model and tokenizer.json give different ids ({problem}), so one of them "
                "belongs to another model: remove it."
            )
    return tokenizer


def load_tokenizer_file(
    directory: str | Path, model_type: str, name: str
) -> SentencePieceTokenizer | TokenizersTokenizer:
    """The tokenizer of one of a folder's files, whichever the folder also holds: spiece.model through the family's
    sentencepiece class, tokenizer.json through its tokenizers class, each with the folder's settings and added
    tokens. `load_tokenizer` serves the tasks through it; `bench --task tokenize` times each file through it."""
    sentencepiece_class, fast_class = FAMILIES[model_type]
    if name not in SOURCES:
        raise ValueError(f"a tokenizer file is spiece.model or tokenizer.json, not {name!r}")
    # The checks below say more than the family name: the tokenizer_config.json warning is theirs to give.
    return (sentencepiece_class if name == "spiece.model" else fast_class).from_pretrained(
        Path(directory), family_check=False
    )


def different_ids(sentencepiece: SentencePieceTokenizer, fast: TokenizersTokenizer) -> str | None:
    """How the two tokenizers' vocabularies differ on ordinary pieces (None when they agree): the number of ids,
    or the first id holding different pieces. Control, unknown and added pieces are skipped: a converter may
    spell special tokens its own way."""
    if sentencepiece.vocab_size != fast.vocab_size:
        return f"{sentencepiece.vocab_size} ids in spiece.model, {fast.vocab_size} in tokenizer.json"
    sp, offset = sentencepiece.sp, sentencepiece.id_offset
    added = set(sentencepiece.added_tokens_decoder)
    for piece_id in range(sp.get_piece_size()):
        index = piece_id + offset
        if index in added or sp.is_control(piece_id) or sp.is_unknown(piece_id) or sp.is_unused(piece_id):
            continue
        piece, other = sp.id_to_piece(piece_id), fast.backend.id_to_token(index)
        if piece != other:
            return f"id {index} is {piece!r} in spiece.model and {other!r} in tokenizer.json"
    return None


def config_mismatch(tokenizer: Any, config: Any) -> str | None:
    """How a tokenizer contradicts its model's config.json (None when it doesn't): more ids than the embeddings
    hold, or a special token at another id than the config declares, or a decoder start id it lacks."""
    files = getattr(tokenizer, "source", "tokenizer")
    if len(tokenizer) > config.vocab_size:
        return (
            f"its tokenizer ({files}) has {len(tokenizer)} tokens and the model's embeddings {config.vocab_size}; "
            "the tokenizer files belong to another model."
        )
    for role, field in CONFIG_ROLES.items():
        declared, token = getattr(config, field, None), tokenizer.special_tokens.get(role)
        if declared is None or token is None:
            continue
        index = tokenizer.convert_tokens_to_ids(token)
        if index != declared:
            return (
                f"its tokenizer ({files}) has {token} at id {index} and config.json declares {field} {declared}; "
                "the tokenizer files belong to another model."
            )
    start = getattr(config, "decoder_start_token_id", None)
    if getattr(config, "is_encoder_decoder", False) and start is not None and not 0 <= start < len(tokenizer):
        return (
            f"config.json's decoder_start_token_id {start} is not an id of its tokenizer ({files}, {len(tokenizer)} "
            "tokens); the tokenizer files belong to another model."
        )
    return None
