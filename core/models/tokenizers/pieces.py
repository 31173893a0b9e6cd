"""The sentencepiece core of both tokenizers: added tokens cut out of the raw text, the plain stretches between
them encoded by sentencepiece in one batched call (with character offsets), ids ↔ tokens, and decoding.

Ground truth is the sentencepiece model itself: rebuilding it from another library would drift on NFKC text,
tabs, newlines and whitespace runs, so every piece here comes from sentencepiece. What a family adds on top (its
special tokens around a text, truncation and padding as the reference does them) is in `framing.py`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

log = logging.getLogger(__name__)

# The files a checkpoint's tokenizer may be read from: ids from spiece.model when a folder has one, else from
# tokenizer.json (what transformers 5 saves); the JSON files beside them name the special and added tokens.
TOKENIZER_FILES = [
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
]
# Order in which the roles' ids are listed by `all_special_ids`, the order transformers users know.
ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# Checkpoints without a length limit often store 1e30 ("no limit") in tokenizer_config.json.
_NO_LIMIT = 10**20
# transformers' decode can undo the spaces a word-level detokenizer leaves before punctuation and contractions.
_CLEAN_UP_SPACES = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


@dataclass(frozen=True)
class AddedToken:
    """A token matched in the raw text before sentencepiece sees it; lstrip/rstrip swallow neighbouring whitespace.

    BigBird's `[MASK]` swallows the whitespace on its left, so "the [MASK]." masks a word the way the model was
    trained on ("▁the" then `[MASK]`), not an extra "▁" piece.
    """

    content: str
    lstrip: bool = False
    rstrip: bool = False


@dataclass
class Tokens:
    """One text's token ids and, when asked for, their (start, end) character spans as an (n, 2) array."""

    ids: list[int]
    offsets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> Tokens:
        return Tokens(self.ids[:n], None if self.offsets is None else self.offsets[:n])


class _Role:
    """A special-token role as `<role>_token` (its text) or `<role>_token_id`; None where the family has none."""

    def __init__(self, role: str, as_id: bool) -> None:
        self.role, self.as_id = role, as_id

    def __get__(self, tokenizer: SentencePieceCore | None, owner: type) -> Any:
        if tokenizer is None:
            return self
        token = tokenizer.special_tokens.get(self.role)
        if token is None or not self.as_id:
            return token
        return tokenizer.convert_tokens_to_ids(token)


class VocabularyError(ValueError):
    """Ids the tokenizer has no token for: the tokenizer files don't belong to the model that made them."""


class SpecialTokenRoles:
    """What both piece cores share: the special-token roles (`pad_token`, `pad_token_id`, ...), the list of special
    tokens and ids, the settings read from tokenizer_config.json, and which file the ids come from (`source`).

    A core sets `special_tokens` (role → text), `additional_special_tokens`, `model_max_length` and
    `clean_up_tokenization_spaces` in its `__init__` and answers `convert_tokens_to_ids`.
    """

    # Which file of a checkpoint the ids come from (shown by --dry-run and bench).
    source = "spiece.model"
    # The keyword arguments `from_pretrained` reads from tokenizer_config.json / special_tokens_map.json.
    token_keys: tuple[str, ...] = ()
    setting_keys: tuple[str, ...] = ("model_max_length", "clean_up_tokenization_spaces")
    special_tokens: dict[str, str]
    additional_special_tokens: list[str]

    bos_token = _Role("bos", as_id=False)
    bos_token_id = _Role("bos", as_id=True)
    eos_token = _Role("eos", as_id=False)
    eos_token_id = _Role("eos", as_id=True)
    unk_token = _Role("unk", as_id=False)
    unk_token_id = _Role("unk", as_id=True)
    sep_token = _Role("sep", as_id=False)
    sep_token_id = _Role("sep", as_id=True)
    pad_token = _Role("pad", as_id=False)
    pad_token_id = _Role("pad", as_id=True)
    cls_token = _Role("cls", as_id=False)
    cls_token_id = _Role("cls", as_id=True)
    mask_token = _Role("mask", as_id=False)
    mask_token_id = _Role("mask", as_id=True)

    @property
    def all_special_tokens(self) -> list[str]:
        roles = [self.special_tokens[role] for role in ROLES if self.special_tokens.get(role) is not None]
        return list(dict.fromkeys(roles + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        raise NotImplementedError

    def _decodable_ids(self, token_ids: Any) -> list[int]:
        """An id, a list, a tensor or an array of ids as a list, each one this tokenizer has (VocabularyError
        else): what both piece cores' `decode` starts from."""
        ids = _as_ids(token_ids)
        ids = [ids] if isinstance(ids, int) else ids
        self._check_ids(ids)
        return ids

    def _check_ids(self, ids: list[int]) -> None:
        """VocabularyError for an id this tokenizer has no token for (a model of another vocabulary made it)."""
        size = len(self)  # type: ignore[arg-type]
        if ids and not 0 <= min(ids) <= max(ids) < size:
            stray = next(i for i in ids if not 0 <= i < size)
            raise VocabularyError(
                f"the model produced token id {stray}, which its tokenizer of {size} tokens lacks: the vocabulary "
                "doesn't match the model."
            )

    def batch_decode(
        self,
        sequences: Sequence[Any],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in _as_rows(sequences)]

    def decode(
        self,
        token_ids: int | Sequence[int] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        raise NotImplementedError

    def _cleaned(self, text: str, clean_up_tokenization_spaces: bool | None) -> str:
        """The decoded text, with the spaces before punctuation undone where asked (or set in the checkpoint)."""
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for old, new in _CLEAN_UP_SPACES:
                text = text.replace(old, new)
        return text

    @classmethod
    def read_settings(cls, directory: Path) -> dict[str, Any]:
        """The keyword arguments tokenizer_config.json and special_tokens_map.json give this class."""
        config = _read_json(directory / "tokenizer_config.json")
        token_map = _read_json(directory / "special_tokens_map.json")
        declared = {entry["content"]: entry for entry in config.get("added_tokens_decoder", {}).values()}
        kwargs: dict[str, Any] = {key: config[key] for key in cls.setting_keys if key in config}
        for key in cls.token_keys:
            value = token_map.get(key, config.get(key))
            if value is not None:
                kwargs[key] = _added_token(value, declared)
        return kwargs


class SentencePieceCore(SpecialTokenRoles):
    """Tokens of text and text of tokens, through sentencepiece, with the added tokens a family declares.

    A family sets `id_offset` (ids below it are reserved, sentencepiece ids are shifted up by it), its added tokens
    and roles in `__init__`, and how decoded stretches are joined in `_join_decoded`.
    """

    id_offset = 0

    def __init__(
        self,
        vocab_file: str | Path,
        sp: spm.SentencePieceProcessor,
        special_tokens: dict[str, str],
        added_tokens: dict[int, AddedToken],
        *,
        additional_special_tokens: Sequence[str] = (),
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.vocab_file = Path(vocab_file)
        self.sp = sp
        self.special_tokens = special_tokens
        self.additional_special_tokens = list(additional_special_tokens)
        self.added_tokens_decoder = added_tokens
        self._added_ids = {token.content: index for index, token in added_tokens.items()}
        self.model_max_length = model_max_length if model_max_length and model_max_length < _NO_LIMIT else None
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._special_id_set = set(self.all_special_ids)
        self._index_added()

    def _index_added(self) -> None:
        """The pattern that cuts the added tokens out of a text: longest first, so "<unk_2>" wins over "<unk>"
        where both match at the same place."""
        self._added_ids = {token.content: index for index, token in self.added_tokens_decoder.items()}
        contents = sorted(self._added_ids, key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, contents))) if contents else None

    def add_tokens_at(self, tokens: dict[int, AddedToken]) -> None:
        """Tokens a fine-tune added beyond the vocabulary (`add_tokens`), at the ids the checkpoint gave them."""
        self.added_tokens_decoder.update(tokens)
        self._index_added()

    # Loading ------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, revision: str | None = None, family_check: bool = True
    ) -> SentencePieceCore:
        """Load from a checkpoint directory or Hub id: spiece.model plus the JSON files beside it, when present,
        and the tokens a fine-tune added (in tokenizer.json, added_tokens.json or tokenizer_config.json); a
        warning where the folder names another family's tokenizer (`warn_of_another_family`)."""
        from ..checkpoints import resolve_checkpoint  # lazy: torch and the Hub client are not needed to tokenize

        directory = Path(resolve_checkpoint(name_or_path, revision=revision, allow_patterns=TOKENIZER_FILES))
        if family_check:
            warn_of_another_family(cls, directory)
        if not (directory / "spiece.model").is_file():
            raise FileNotFoundError(f"{name_or_path} has no spiece.model.")
        tokenizer = cls(directory / "spiece.model", **cls.read_settings(directory))
        tokenizer.add_tokens_at(added_beyond(directory, len(tokenizer)))
        return tokenizer

    # Saving -------------------------------------------------------------------------------------------------

    def save_vocabulary(self, save_directory: str | Path, filename_prefix: str | None = None) -> tuple[str]:
        """Write the sentencepiece model into an existing folder as `[prefix-]spiece.model`; its path, in a tuple."""
        directory = Path(save_directory)
        if not directory.is_dir():
            raise NotADirectoryError(f"{save_directory} is not a folder to save the vocabulary in.")
        path = directory / f"{filename_prefix + '-' if filename_prefix else ''}spiece.model"
        path.write_bytes(self.sp.serialized_model_proto())
        return (str(path),)

    def save_pretrained(self, save_directory: str | Path) -> tuple[str, ...]:
        """Write spiece.model, tokenizer_config.json and special_tokens_map.json (the folder is made if missing),
        which `from_pretrained` here and the reference's tokenizer read back as this one; the paths written.

        A fine-tuned model saved beside it is then a checkpoint every command takes as `--model`.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokens = {key: self._saved_token(key) for key in self.token_keys}
        settings = {key: getattr(self, key) for key in self.setting_keys if getattr(self, key) is not None}
        files = {
            "tokenizer_config.json": {"tokenizer_class": type(self).__name__, **settings, **tokens},
            "special_tokens_map.json": tokens,
        }
        for name, content in files.items():
            (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return (*self.save_vocabulary(directory), *(str(directory / name) for name in files))

    def _saved_token(self, key: str) -> str | dict[str, Any]:
        """A role token (`mask_token`, ...) as the JSON files hold it: its text, or with the whitespace it swallows
        (the reference's own files write a plain string where nothing is swallowed, and some keys take no other)."""
        content = getattr(self, key)
        token = self.added_tokens_decoder.get(self._added_ids.get(content, -1), AddedToken(content))
        if not (token.lstrip or token.rstrip):
            return content
        return {
            "content": content,
            "lstrip": token.lstrip,
            "rstrip": token.rstrip,
            "normalized": False,
            "single_word": False,
            "special": True,
        }

    # Vocabulary ---------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the id space the model's embedding must cover (sentencepiece pieces plus the reserved ids)."""
        return self.sp.get_piece_size() + self.id_offset

    def __len__(self) -> int:
        return max(self.vocab_size, max(self.added_tokens_decoder, default=-1) + 1)

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp.id_to_piece(i): i + self.id_offset for i in range(self.sp.get_piece_size())}
        vocab.update(self._added_ids)
        return vocab

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Added tokens by their own ids, everything else through sentencepiece (unknown pieces become `<unk>`)."""
        if isinstance(tokens, str):
            index = self._added_ids.get(tokens)
            return index if index is not None else self.sp.piece_to_id(tokens) + self.id_offset
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        ids = _as_ids(ids)
        if isinstance(ids, int):
            token = self.added_tokens_decoder.get(ids)
            return token.content if token is not None else self.sp.id_to_piece(ids - self.id_offset)
        return [self.convert_ids_to_tokens(i) for i in ids if not (skip_special_tokens and i in self._special_id_set)]

    # Splitting and sentencepiece ----------------------------------------------------------------------------

    def _split(self, text: str) -> list[tuple[int, int, int | None]]:
        """Cut `text` into (start, end, added id or None) parts: added tokens and the plain stretches between them."""
        if self._added_pattern is None:
            return [(0, len(text), None)] if text else []
        parts: list[list[Any]] = []
        position = 0
        for match in self._added_pattern.finditer(text):
            if match.start() > position:
                parts.append([position, match.start(), None])
            parts.append([match.start(), match.end(), self._added_ids[match.group()]])
            position = match.end()
        if position < len(text):
            parts.append([position, len(text), None])
        for i, (_, _, index) in enumerate(parts):
            if index is not None:
                self._swallow_whitespace(text, parts, i)
        return [(start, end, index) for start, end, index in parts if index is not None or end > start]

    def _swallow_whitespace(self, text: str, parts: list[list[Any]], i: int) -> None:
        """Shrink the plain neighbours of added token `i` by the whitespace that token swallows."""
        token = self.added_tokens_decoder[parts[i][2]]
        if token.rstrip and i + 1 < len(parts) and parts[i + 1][2] is None:
            start, end = parts[i + 1][:2]
            parts[i + 1][0] = end - len(text[start:end].lstrip())
        if token.lstrip and i > 0 and parts[i - 1][2] is None:
            start, end = parts[i - 1][:2]
            parts[i - 1][1] = start + len(text[start:end].rstrip())

    def tokenize(self, text: str) -> list[str]:
        """The pieces of `text` as sentencepiece writes them (surface text for unknown pieces), added tokens whole."""
        parts = self._split(text)
        plain = [text[start:end] for start, end, index in parts if index is None]
        pieces = iter(self.sp.encode(plain, out_type=str) if plain else [])
        tokens: list[str] = []
        for _, _, index in parts:
            tokens.extend(next(pieces) if index is None else [self.added_tokens_decoder[index].content])
        return tokens

    def encode_texts(self, texts: Sequence[str], with_offsets: bool = True) -> list[Tokens]:
        """Tokens of many texts (no special tokens, no truncation) with one sentencepiece call over all their plain
        stretches, which it shares among all cores."""
        layouts = [self._split(text) for text in texts]
        plain = [
            text[start:end]
            for text, parts in zip(texts, layouts, strict=True)
            for start, end, index in parts
            if index is None
        ]
        encoded = iter(self._encode_plain(plain, with_offsets) if plain else [])
        return [self._stitch(parts, encoded, with_offsets) for parts in layouts]

    def _encode_plain(self, segments: list[str], with_offsets: bool) -> list[Tokens]:
        if not with_offsets:
            return [Tokens(self._shift(ids), None) for ids in self.sp.encode(segments)]
        mapped = self.sp.encode(segments, out_type="offset_mapping")
        return [
            Tokens(self._shift(item["ids"]), _visible_spans(segment, _offset_array(item["offsets"])))
            for segment, item in zip(segments, mapped, strict=True)
        ]

    def _shift(self, sp_ids: list[int]) -> list[int]:
        """Sentencepiece ids to ours."""
        return [i + self.id_offset for i in sp_ids] if self.id_offset else sp_ids

    @staticmethod
    def _stitch(parts: list[tuple[int, int, int | None]], encoded: Iterator[Tokens], with_offsets: bool) -> Tokens:
        """Put one text's encoded plain stretches and its added tokens back in order, spans shifted into the text."""
        ids: list[int] = []
        spans: list[np.ndarray] = []
        for start, end, index in parts:
            tokens = next(encoded) if index is None else None
            ids.extend([index] if tokens is None else tokens.ids)
            if with_offsets:
                spans.append(np.array([[start, end]], dtype=np.int64) if tokens is None else tokens.offsets + start)
        if not with_offsets:
            return Tokens(ids, None)
        return Tokens(ids, np.concatenate(spans) if spans else np.zeros((0, 2), dtype=np.int64))

    # Decoding -----------------------------------------------------------------------------------------------

    def decode(
        self,
        token_ids: int | Sequence[int] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Text of `token_ids`: sentencepiece decodes the ordinary pieces, added tokens are written as they are."""
        ids = self._decodable_ids(token_ids)
        stretches: list[tuple[bool, str]] = []
        run: list[int] = []
        for index in ids:
            if skip_special_tokens and index in self._special_id_set:
                continue
            token = self.added_tokens_decoder.get(index)
            if token is None:
                run.append(index - self.id_offset)
                continue
            if run:
                stretches.append((False, self.sp.decode(run)))
                run = []
            stretches.append((True, token.content))
        if run:
            stretches.append((False, self.sp.decode(run)))
        return self._cleaned(self._join_decoded(stretches), clean_up_tokenization_spaces)

    def _join_decoded(self, stretches: list[tuple[bool, str]]) -> str:
        """Join decoded stretches (is-added-token, text) into the final string."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.vocab_file)!r}, vocab_size={self.vocab_size})"


def _offset_array(offsets: list[tuple[int, int]]) -> np.ndarray:
    """A library's (start, end) pairs as an (n, 2) array."""
    return np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets)).reshape(-1, 2)


def _visible_spans(segment: str, spans: np.ndarray) -> np.ndarray:
    """Sentencepiece's character spans (an (n, 2) array, changed in place) with the whitespace a leading "▁"
    stands for left out.

    sentencepiece gives a "▁x" piece the whitespace run before it as well; a span should cover what the token
    shows, so an answer span cut from the text does not start with a blank. A piece that is only "▁" keeps an
    empty span where the next token starts. Pieces of one character that NFKC expands ("ﬁ" -> "f", "i") come
    back as sentencepiece gives them: the earlier pieces empty, the last one covering the whole character.
    """
    if not spans.size:
        return spans
    codes = np.frombuffer(segment.encode("utf-32-le"), dtype=np.uint32)
    positions = np.arange(len(codes) + 1, dtype=np.int64)
    positions[:-1][np.isin(codes, _whitespace_codes())] = len(codes)
    next_visible = np.minimum.accumulate(positions[::-1])[::-1]
    spans[:, 0] = np.minimum(next_visible[spans[:, 0]], spans[:, 1])
    return spans


@cache
def _whitespace_codes() -> np.ndarray:
    return np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def _added_token(value: str | dict, declared: dict[str, dict]) -> str | AddedToken:
    """A token from a tokenizer JSON file: a plain string, or a dict whose lstrip/rstrip flags are kept."""
    entry = value if isinstance(value, dict) else declared.get(value)
    if entry is None:
        return value
    return AddedToken(entry["content"], lstrip=bool(entry.get("lstrip")), rstrip=bool(entry.get("rstrip")))


def added_beyond(directory: Path, first_free: int) -> dict[int, AddedToken]:
    """Tokens a checkpoint adds at ids from `first_free` on (a fine-tune's `add_tokens`), from whichever of
    tokenizer.json, added_tokens.json and tokenizer_config.json lists them, with the whitespace they swallow."""
    found: dict[int, AddedToken] = {}
    backend = _read_json(directory / "tokenizer.json").get("added_tokens", [])
    declared = _read_json(directory / "tokenizer_config.json").get("added_tokens_decoder", {})
    entries = [(int(entry["id"]), entry) for entry in backend] + [(int(i), entry) for i, entry in declared.items()]
    entries += [(int(i), {"content": content}) for content, i in _read_json(directory / "added_tokens.json").items()]
    for index, entry in entries:
        if index >= first_free and index not in found:
            found[index] = _added_token(entry, {})
    return found


def as_added_token(value: str | AddedToken, lstrip: bool = False) -> AddedToken:
    return value if isinstance(value, AddedToken) else AddedToken(value, lstrip=lstrip)


FAMILIES = frozenset({"BigBirdTokenizer", "PegasusTokenizer"})


def warn_of_another_family(cls: type, directory: Path) -> None:
    """Warn where the folder's tokenizer_config.json names the other family's tokenizer than `cls` (a Pegasus
    folder read as BigBird's; a generic name such as PreTrainedTokenizerFast says nothing): texts would get `cls`'s
    special tokens, at ids the vocabulary gives other pieces. A Task checks more than the name (loading.py) and
    says it in one sentence, so its loading skips this."""
    named, family = _read_json(directory / "tokenizer_config.json").get("tokenizer_class"), _family(cls)
    if isinstance(named, str) and family is not None and named.removesuffix("Fast") in FAMILIES - {family}:
        log.warning("%s: its tokenizer_config.json names %s, read here as a %s.", directory, named, family)


def _family(cls: type) -> str | None:
    """The tokenizer family `cls` frames texts as (one of FAMILIES, a Fast class as its family), or None."""
    names = (c.__name__.removesuffix("Fast") for c in cls.__mro__)
    return next((name for name in names if name in FAMILIES), None)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _as_ids(ids: Any) -> int | list[int]:
    """Ids given as an int, a list, a numpy array or a tensor (scalars included), as Python ints."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return int(ids) if isinstance(ids, int) else [int(i) for i in ids]


def _as_rows(sequences: Any) -> list[Any]:
    return sequences.tolist() if hasattr(sequences, "tolist") else list(sequences)
