"""The piece core on Hugging Face's `tokenizers` (the Rust library transformers' fast tokenizers run): a
checkpoint's tokenizer.json as it is, or a sentencepiece model converted into the same kind of Unigram tokenizer.

Only pieces come from here (ids, character offsets, added tokens, decoding); the special tokens around a text,
truncation and padding are `framing.py`'s, the same for both backends. A tokenizer.json's own post-processor,
truncation and padding are therefore left unused (and kept, so `save_pretrained` writes the file back whole).

A converted sentencepiece model is a Unigram model over the same pieces and scores, normalized by the model's own
precompiled character map, then with trailing whitespace stripped and runs of spaces kept as one "▁" piece,
split into words at whitespace by Metaspace: the layout transformers 4's converter gives both families.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken as BackendToken
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from .framing import Framing
from .pieces import (
    _NO_LIMIT,
    TOKENIZER_FILES,
    AddedToken,
    SpecialTokenRoles,
    Tokens,
    _as_ids,
    _offset_array,
    _read_json,
    _visible_spans,
    added_beyond,
    warn_of_another_family,
)

# Piece types in a sentencepiece model (sentencepiece_model.proto).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
# A long text is cut into parts of about this many characters, which the library encodes on all cores at once.
PART_CHARS = 1 << 13
# Where a part may end: a single space between two non-blank characters. Every piece, word and added token on
# either side of it is the same as in the whole text (the space starts the next word's "▁").
_CUT = re.compile(r"(?<=\S) (?=\S)")


class TokenizersCore(SpecialTokenRoles):
    """Tokens of text and text of tokens through a `tokenizers.Tokenizer`; its added tokens are cut out of a text by
    the library itself (with the whitespace each swallows), exactly as transformers' fast tokenizers do."""

    def __init__(
        self,
        backend: Tokenizer,
        special_tokens: dict[str, AddedToken],
        *,
        source: str,
        additional_special_tokens: Sequence[str] = (),
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.backend = backend
        self.source = source
        # A role token the file lacks is added as a special token, as the reference does at load.
        missing = [token for token in special_tokens.values() if backend.token_to_id(token.content) is None]
        backend.add_special_tokens([_backend_token(token, special=True) for token in missing])
        self.special_tokens = {role: token.content for role, token in special_tokens.items()}
        self.additional_special_tokens = list(additional_special_tokens)
        self.model_max_length = model_max_length if model_max_length and model_max_length < _NO_LIMIT else None
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._unk_id = backend.token_to_id(self.special_tokens.get("unk", "<unk>"))
        self._special_id_set = set(self.all_special_ids)
        self._cuttable = self._parts_keep_ids()

    def _parts_keep_ids(self) -> bool:
        """Whether cutting a text at `_CUT` leaves its tokens as they are: not when an added token swallows the
        whitespace after it or must stand as a whole word, or holds whitespace itself."""
        return not any(
            token.rstrip or token.single_word or any(c.isspace() for c in token.content)
            for token in self.backend.get_added_tokens_decoder().values()
        )

    # Vocabulary ---------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Ids of the model's own vocabulary (added tokens not counted), as the reference's fast tokenizers say."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return {
            index: AddedToken(token.content, lstrip=token.lstrip, rstrip=token.rstrip)
            for index, token in self.backend.get_added_tokens_decoder().items()
        }

    def add_tokens_at(self, tokens: dict[int, AddedToken]) -> None:
        """Tokens a checkpoint adds beyond this vocabulary, each at the id it was given (the next free ones)."""
        for index, token in sorted(tokens.items()):
            if self.backend.token_to_id(token.content) is None:
                self.backend.add_tokens([_backend_token(token, special=False)])
            if self.backend.token_to_id(token.content) != index:
                raise ValueError(f"the added token {token.content!r} is listed at id {index}, after a gap in the ids.")
        self._cuttable = self._parts_keep_ids()

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            index = self.backend.token_to_id(tokens)
            return self._unk_id if index is None else index
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        ids = _as_ids(ids)
        self._check_ids([ids] if isinstance(ids, int) else ids)
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(i) for i in ids if not (skip_special_tokens and i in self._special_id_set)]

    # Encoding and decoding ----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode_texts(self, texts: Sequence[str], with_offsets: bool = True) -> list[Tokens]:
        """Tokens of many texts (no special tokens, no truncation) in one call of the library, long ones cut into
        parts so that all cores share them; spans leave out the whitespace a "▁" stands for, as the sentencepiece
        core's do."""
        parts = [self._parts(text) for text in texts]
        flat = [text[start:end] for text, bounds in zip(texts, parts, strict=True) for start, end in bounds]
        if with_offsets:
            encoded = iter(self.backend.encode_batch(flat, add_special_tokens=False))
        else:
            encoded = iter(self.backend.encode_batch_fast(flat, add_special_tokens=False))
        out = []
        for text, bounds in zip(texts, parts, strict=True):
            pieces = [next(encoded) for _ in bounds]
            ids = [i for piece in pieces for i in piece.ids]
            if not with_offsets:
                out.append(Tokens(ids, None))
                continue
            offsets = [_offset_array(piece.offsets) + start for piece, (start, _) in zip(pieces, bounds, strict=True)]
            out.append(Tokens(ids, _visible_spans(text, offsets[0] if len(offsets) == 1 else np.concatenate(offsets))))
        return out

    def _parts(self, text: str) -> list[tuple[int, int]]:
        """(start, end) parts of a text of about PART_CHARS characters each, cut where the tokens stay those of the
        whole text (one part for a short text, or where no such cut is known)."""
        if len(text) < 2 * PART_CHARS or not self._cuttable:
            return [(0, len(text))]
        bounds = [0]
        while len(text) - bounds[-1] >= 2 * PART_CHARS:
            cut = _CUT.search(text, bounds[-1] + PART_CHARS)
            if cut is None:
                break
            bounds.append(cut.start())
        return list(zip(bounds, bounds[1:] + [len(text)], strict=True))

    def decode(
        self,
        token_ids: int | Sequence[int] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        ids = self._decodable_ids(token_ids)
        return self._cleaned(
            self.backend.decode(ids, skip_special_tokens=skip_special_tokens), clean_up_tokenization_spaces
        )

    # Loading and saving -------------------------------------------------------------------------------------

    @classmethod
    def read_settings(cls, directory: Path) -> dict[str, Any]:
        """As the sentencepiece classes read them, plus the list of other special tokens (transformers 4 names it
        `additional_special_tokens`, transformers 5 `extra_special_tokens`)."""
        kwargs = super().read_settings(directory)
        config = _read_json(directory / "tokenizer_config.json")
        for key in ("additional_special_tokens", "extra_special_tokens"):
            listed = config.get(key)
            if isinstance(listed, list) and listed:
                kwargs["additional_special_tokens"] = [t["content"] if isinstance(t, dict) else t for t in listed]
        return kwargs

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, revision: str | None = None, family_check: bool = True
    ) -> TokenizersCore:
        """Load from a checkpoint directory or Hub id: its tokenizer.json, else its spiece.model converted; the
        special tokens from the JSON files beside them, and the tokens a fine-tune added; a warning where the
        folder names another family's tokenizer (`pieces.warn_of_another_family`)."""
        from ..checkpoints import resolve_checkpoint  # lazy: torch and the Hub client are not needed to tokenize

        directory = Path(resolve_checkpoint(name_or_path, revision=revision, allow_patterns=TOKENIZER_FILES))
        if family_check:
            warn_of_another_family(cls, directory)
        settings = cls.read_settings(directory)
        if (directory / "tokenizer.json").is_file():
            tokenizer = cls(tokenizer_file=directory / "tokenizer.json", **settings)  # type: ignore[call-arg]
        elif (directory / "spiece.model").is_file():
            tokenizer = cls(vocab_file=directory / "spiece.model", **settings)  # type: ignore[call-arg]
        else:
            raise FileNotFoundError(f"{name_or_path} has neither a tokenizer.json nor a spiece.model.")
        tokenizer.add_tokens_at(added_beyond(directory, len(tokenizer)))
        return tokenizer

    def save_pretrained(self, save_directory: str | Path) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (the folder is made if missing),
        which `from_pretrained` here and the reference's tokenizers read back as this one; the paths written."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.backend.post_processor is None:  # converted here: the reference reads its framing from the file
            self.backend.post_processor = self._template()
        self.backend.save(str(directory / "tokenizer.json"))
        tokens = {key: getattr(self, key) for key in self.token_keys}
        settings = {key: getattr(self, key) for key in self.setting_keys if getattr(self, key) is not None}
        extra = {"additional_special_tokens": self.additional_special_tokens} if self.additional_special_tokens else {}
        files = {
            "tokenizer_config.json": {"tokenizer_class": self.saved_class, **settings, **tokens, **extra},
            "special_tokens_map.json": {**tokens, **extra},
        }
        for name, content in files.items():
            (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return (str(directory / "tokenizer.json"), *(str(directory / name) for name in files))

    # The class name tokenizer_config.json gives (the reference finds its fast class from the plain name).
    saved_class = ""

    def _template(self) -> processors.TemplateProcessing:
        """The family's framing as a tokenizer.json post-processor, built from the same `_affixes`."""
        before, between, after = self._affixes(pair=False)  # type: ignore[attr-defined]
        pair_before, pair_between, pair_after = self._affixes(pair=True)  # type: ignore[attr-defined]
        names = {i: self.backend.id_to_token(i) for i in {*before, *after, *pair_before, *pair_between, *pair_after}}

        def spell(ids: list[int], type_id: int) -> list[str]:
            return [f"{names[i]}:{type_id}" for i in ids]

        single = spell(before, 0) + ["$A:0"] + spell(after, 0)
        pair = spell(pair_before, 0) + ["$A:0"] + spell(pair_between, 0) + ["$B:1"] + spell(pair_after, 1)
        specials = [(name, index) for index, name in names.items()]
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


class TokenizersTokenizer(Framing, TokenizersCore):
    """A family's tokenizer on Hugging Face's tokenizers (a checkpoint's tokenizer.json)."""

    def _pair_cuts(self, n_first: int, n_second: int, excess: int) -> tuple[int, int]:
        return tokenizers_longest_first_cuts(n_first, n_second, excess)


def tokenizers_longest_first_cuts(n_first: int, n_second: int, excess: int) -> tuple[int, int]:
    """How many tokens the tokenizers library cuts from each text of a pair under "longest_first": the shorter
    text (the first, on a tie) keeps up to half the room, the longer one the rest."""
    room = n_first + n_second - excess
    shorter = min(n_first, n_second)
    keep_shorter = min(shorter, room // 2)
    keep_longer = room - keep_shorter
    if n_first <= n_second:
        return n_first - keep_shorter, n_second - keep_longer
    return n_first - keep_longer, n_second - keep_shorter


# Converting a sentencepiece model -------------------------------------------------------------------------------


def unigram_from_sentencepiece(
    model_file: str | Path,
    *,
    reserved: Sequence[tuple[str, float]] = (),
    first_piece: int = 0,
    split_at_whitespace: bool = False,
    specials: Sequence[BackendToken] = (),
) -> Tokenizer:
    """A Unigram tokenizer over a sentencepiece model's pieces and scores.

    `reserved` pieces come first and the model's pieces from `first_piece` on after them (Pegasus's layout);
    `split_at_whitespace` splits words at any whitespace before Metaspace (Pegasus's converter does, BigBird's
    doesn't); `specials` are registered as special added tokens, and the model's user-defined pieces as ordinary
    added tokens, so both are matched whole in the raw text as sentencepiece matches them (the whitespace before
    one is then a stretch of its own, which the normalizer strips).
    """
    pieces, charsmap = read_sentencepiece(Path(model_file).read_bytes())
    vocab = list(reserved) + [(piece, score) for piece, score, _ in pieces[first_piece:]]
    unknown = next(i for i, (_, _, kind) in enumerate(pieces) if kind == UNKNOWN)
    backend = Tokenizer(Unigram(vocab, unk_id=unknown - first_piece + len(reserved), byte_fallback=False))
    steps = [normalizers.Precompiled(charsmap)] if charsmap else []
    steps += [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    backend.normalizer = normalizers.Sequence(steps)
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), metaspace]) if split_at_whitespace else metaspace
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    special_names = {token.content for token in specials}
    user = [piece for piece, _, kind in pieces[first_piece:] if kind == USER_DEFINED and piece not in special_names]
    backend.add_tokens([BackendToken(piece, normalized=False, special=False) for piece in user])
    backend.add_special_tokens(list(specials))
    return backend


def read_sentencepiece(model: bytes) -> tuple[list[tuple[str, float, int]], bytes]:
    """(piece, score, type) of every piece of a serialized sentencepiece model, and its precompiled character map
    (the NFKC-like normalization it was trained with; empty when it has none). Read off the protobuf wire format
    directly: two fields of a fixed schema don't need the protobuf package."""
    pieces: list[tuple[str, float, int]] = []
    charsmap = b""
    for field, value in _fields(model):
        if field == 1:  # ModelProto.pieces
            piece, score, kind = "", 0.0, NORMAL
            for sub, sub_value in _fields(value):
                if sub == 1:
                    piece = sub_value.decode("utf-8")
                elif sub == 2:
                    score = struct.unpack("<f", sub_value)[0]
                elif sub == 3:
                    kind = sub_value
            pieces.append((piece, score, kind))
        elif field == 3:  # ModelProto.normalizer_spec
            charsmap = next((v for sub, v in _fields(value) if sub == 2), b"")
    return pieces, charsmap


def _fields(buffer: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: ints for varints, bytes for the rest."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        wire = key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = buffer[position : position + size], position + size
        elif wire == 2:
            size, position = _varint(buffer, position)
            value, position = buffer[position : position + size], position + size
        else:
            raise ValueError("not a sentencepiece model (unknown protobuf wire type).")
        yield key >> 3, value


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def _backend_token(token: AddedToken, *, special: bool, normalized: bool | None = None) -> BackendToken:
    """Our added token as the library's (a token that swallows whitespace is matched in the raw text)."""
    if normalized is None:
        normalized = not special
    return BackendToken(token.content, lstrip=token.lstrip, rstrip=token.rstrip, normalized=normalized, special=special)
