"""BigBird and Pegasus tokenizers on sentencepiece, with character offsets into the original text.

Ground truth is the sentencepiece model plus each family's special-token rules, which is what the reference's
sentencepiece ("slow") tokenizers do; the tests hold both against each other. Rebuilding the model from
another library would drift on NFKC text, tabs, newlines and whitespace runs, so every piece here comes from
sentencepiece itself.

The flow of one call: the text is cut at added tokens (`[MASK]`, `<s>`, `<mask_1>`, ... recognised wherever they
appear), the plain stretches between them go to sentencepiece in one batched call, and the pieces are stitched back
with the added tokens, truncated, framed with the family's special tokens and padded.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

TOKENIZER_FILES = ["spiece.model", "tokenizer_config.json", "special_tokens_map.json"]
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
PADDING_STRATEGIES = ("longest", "max_length")
# Order in which the roles' ids are listed by `all_special_ids`, the order transformers users know.
ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# Checkpoints without a length limit often store 1e30 ("no limit") in tokenizer_config.json.
_NO_LIMIT = 10**20
# transformers' decode can undo the spaces a word-level detokenizer leaves before punctuation and contractions.
_CLEAN_UP_SPACES = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


@dataclass(frozen=True)
class AddedToken:
    """A token matched in the raw text before sentencepiece sees it; lstrip/rstrip swallow neighbouring whitespace.

    BigBird's `[MASK]` swallows the whitespace on its left, so "the [MASK]." masks a word the way the model was
    trained on ("▁the" then `[MASK]`), not an extra "▁" piece.
    """

    content: str
    lstrip: bool = False
    rstrip: bool = False


class BatchEncoding(dict):
    """The model inputs of one call: keys as in transformers (`input_ids`, `attention_mask`, ...), or attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor to `device` (lists and arrays stay where they are)."""
        return BatchEncoding({key: value.to(device) if hasattr(value, "to") else value for key, value in self.items()})


@dataclass
class _Tokens:
    """One text's token ids and, when asked for, their (start, end) character spans as an (n, 2) array."""

    ids: list[int]
    offsets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> _Tokens:
        return _Tokens(self.ids[:n], None if self.offsets is None else self.offsets[:n])


class _Role:
    """A special-token role as `<role>_token` (its text) or `<role>_token_id`; None where the family has none."""

    def __init__(self, role: str, as_id: bool) -> None:
        self.role, self.as_id = role, as_id

    def __get__(self, tokenizer: SentencePieceTokenizer | None, owner: type) -> Any:
        if tokenizer is None:
            return self
        token = tokenizer.special_tokens.get(self.role)
        if token is None or not self.as_id:
            return token
        return tokenizer.convert_tokens_to_ids(token)


class SentencePieceTokenizer:
    """What BigBird and Pegasus share: added tokens, batched sentencepiece calls, truncation, padding, decoding.

    A family sets `id_offset` (ids below it are reserved, sentencepiece ids are shifted up by it), its added tokens
    and roles in `__init__`, the special tokens around one or two texts in `_affixes`, and how decoded stretches
    are joined in `_join_decoded`.
    """

    id_offset = 0
    # The keyword arguments `from_pretrained` reads from tokenizer_config.json / special_tokens_map.json.
    token_keys: tuple[str, ...] = ()
    setting_keys: tuple[str, ...] = ("model_max_length", "clean_up_tokenization_spaces")

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
        # Longest first, so "<unk_2>" wins over "<unk>" where both match at the same place.
        contents = sorted(self._added_ids, key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, contents))) if contents else None

    # Loading ------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None) -> SentencePieceTokenizer:
        """Load from a checkpoint directory or Hub id: spiece.model plus the JSON files beside it, when present."""
        from .checkpoints import resolve_checkpoint  # lazy: torch and the Hub client are not needed to tokenize

        directory = Path(resolve_checkpoint(name_or_path, revision=revision, allow_patterns=TOKENIZER_FILES))
        config = _read_json(directory / "tokenizer_config.json")
        token_map = _read_json(directory / "special_tokens_map.json")
        declared = {entry["content"]: entry for entry in config.get("added_tokens_decoder", {}).values()}
        kwargs: dict[str, Any] = {key: config[key] for key in cls.setting_keys if key in config}
        for key in cls.token_keys:
            value = token_map.get(key, config.get(key))
            if value is not None:
                kwargs[key] = _added_token(value, declared)
        return cls(directory / "spiece.model", **kwargs)

    # Vocabulary ---------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the id space the model's embedding must cover (sentencepiece pieces plus the reserved ids)."""
        return self.sp.get_piece_size() + self.id_offset

    def __len__(self) -> int:
        return max(self.vocab_size, max(self.added_tokens_decoder, default=-1) + 1)

    @property
    def all_special_tokens(self) -> list[str]:
        roles = [self.special_tokens[role] for role in ROLES if self.special_tokens.get(role) is not None]
        return list(dict.fromkeys(roles + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

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

    def _encode_texts(self, texts: Sequence[str], with_offsets: bool) -> list[_Tokens]:
        """Tokenize many texts with one sentencepiece call over all their plain stretches."""
        layouts = [self._split(text) for text in texts]
        plain = [
            text[start:end]
            for text, parts in zip(texts, layouts, strict=True)
            for start, end, index in parts
            if index is None
        ]
        encoded = iter(self._encode_plain(plain, with_offsets) if plain else [])
        return [self._stitch(parts, encoded, with_offsets) for parts in layouts]

    def _encode_plain(self, segments: list[str], with_offsets: bool) -> list[_Tokens]:
        if not with_offsets:
            return [_Tokens(self._shift(ids), None) for ids in self.sp.encode(segments)]
        mapped = self.sp.encode(segments, out_type="offset_mapping")
        return [
            _Tokens(self._shift(item["ids"]), _visible_spans(segment, item["offsets"]))
            for segment, item in zip(segments, mapped, strict=True)
        ]

    def _shift(self, sp_ids: list[int]) -> list[int]:
        """Sentencepiece ids to ours."""
        return [i + self.id_offset for i in sp_ids] if self.id_offset else sp_ids

    @staticmethod
    def _stitch(parts: list[tuple[int, int, int | None]], encoded: Iterator[_Tokens], with_offsets: bool) -> _Tokens:
        """Put one text's encoded plain stretches and its added tokens back in order, spans shifted into the text."""
        ids: list[int] = []
        spans: list[np.ndarray] = []
        for start, end, index in parts:
            tokens = next(encoded) if index is None else None
            ids.extend([index] if tokens is None else tokens.ids)
            if with_offsets:
                spans.append(np.array([[start, end]], dtype=np.int64) if tokens is None else tokens.offsets + start)
        if not with_offsets:
            return _Tokens(ids, None)
        return _Tokens(ids, np.concatenate(spans) if spans else np.zeros((0, 2), dtype=np.int64))

    # Special tokens -----------------------------------------------------------------------------------------

    def _affixes(self, pair: bool) -> tuple[list[int], list[int], list[int]]:
        """Special ids before the first text, between the two texts, and after the last one."""
        raise NotImplementedError

    def text_offsets(self, n_first: int) -> tuple[int, int]:
        """Where the first and the second text start in a framed pair whose first text has `n_first` tokens."""
        before, between, _ = self._affixes(pair=True)
        return len(before), len(before) + n_first + len(between)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return sum(map(len, self._affixes(pair)))

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        before, between, after = self._affixes(token_ids_1 is not None)
        return before + token_ids_0 + (between + token_ids_1 if token_ids_1 is not None else []) + after

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """0 for the first text with the special tokens before and right after it, 1 for the second text and its end."""
        before, between, after = self._affixes(token_ids_1 is not None)
        if token_ids_1 is None:
            return [0] * (len(before) + len(token_ids_0) + len(after))
        return [0] * (len(before) + len(token_ids_0) + len(between)) + [1] * (len(token_ids_1) + len(after))

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where a special token sits (or will sit, once `build_inputs_with_special_tokens` has run), else 0."""
        if already_has_special_tokens:
            return [int(i in self._special_id_set) for i in token_ids_0]
        before, between, after = self._affixes(token_ids_1 is not None)
        mask = [1] * len(before) + [0] * len(token_ids_0)
        if token_ids_1 is not None:
            mask += [1] * len(between) + [0] * len(token_ids_1)
        return mask + [1] * len(after)

    # Encoding -----------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
    ) -> BatchEncoding:
        """Tokenize a text (or a batch, or pairs), truncate, add special tokens, pad, and return the model inputs.

        As in transformers: `truncation=None` truncates only when `max_length` is given without padding;
        `truncation=True` means "longest_first"; truncation and `padding="max_length"` without `max_length` use
        `model_max_length`. A single text gives flat lists, or tensors with a batch dimension of one.
        `offset_mapping` holds each token's (start, end) characters in its own text, leading whitespace left out;
        special tokens added around the texts get (0, 0).
        """
        batched = not isinstance(text, str)
        firsts = list(text) if batched else [text]
        seconds = _as_batch(text_pair, batched, len(firsts))
        strategy, limit = self._truncation_plan(truncation, max_length, padding)
        encoded = self._encode_texts(firsts + (seconds or []), return_offsets_mapping)
        pairs = zip(
            encoded[: len(firsts)], encoded[len(firsts) :] if seconds is not None else [None] * len(firsts), strict=True
        )
        rows = []
        for first, second in pairs:
            if strategy is not None:
                first, second = self._truncate(first, second, limit, strategy, add_special_tokens)
            rows.append(self._frame(first, second, add_special_tokens))
        width = self._padded_width(rows, padding, max_length, pad_to_multiple_of)
        keys = ["input_ids"]
        keys += ["token_type_ids"] if return_token_type_ids else []
        keys += ["attention_mask"] if return_attention_mask else []
        keys += ["special_tokens_mask"] if return_special_tokens_mask else []
        keys += ["offset_mapping"] if return_offsets_mapping else []
        columns = {key: [self._pad(row[key], key, width) for row in rows] for key in keys}
        return BatchEncoding({key: _output(values, return_tensors, batched) for key, values in columns.items()})

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """The input ids of one text (or pair), as `__call__` builds them."""
        out = self(
            text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation, max_length=max_length,
            return_attention_mask=False,
        )  # fmt: skip
        return out["input_ids"]

    def _truncation_plan(
        self, truncation: bool | str | None, max_length: int | None, padding: bool | str
    ) -> tuple[str | None, int | None]:
        """The truncation strategy and length limit of a call, or (None, None) for no truncation."""
        if truncation is None:
            truncation = max_length is not None and padding in (False, None, "do_not_pad")
        if truncation is True:
            truncation = "longest_first"
        if truncation in (False, "do_not_truncate"):
            return None, None
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation must be a bool or one of {TRUNCATION_STRATEGIES}, not {truncation!r}.")
        limit = max_length if max_length is not None else self.model_max_length
        return (truncation, limit) if limit is not None else (None, None)

    def _truncate(
        self, first: _Tokens, second: _Tokens | None, limit: int, strategy: str, add_special_tokens: bool
    ) -> tuple[_Tokens, _Tokens | None]:
        """Drop tokens from the end of the first and/or second text until the framed sequence fits `limit`."""
        specials = self.num_special_tokens_to_add(second is not None) if add_special_tokens else 0
        excess = len(first) + (len(second) if second is not None else 0) + specials - limit
        if excess <= 0:
            return first, second
        if strategy == "longest_first" and second is not None:
            cut_first, cut_second = _longest_first_cuts(len(first), len(second), excess)
            return first.head(max(len(first) - cut_first, 0)), second.head(max(len(second) - cut_second, 0))
        victim = second if strategy == "only_second" else first
        name = "second" if strategy == "only_second" else "first"
        if victim is None or len(victim) <= excess:
            size = "missing" if victim is None else f"{len(victim)} tokens long"
            raise ValueError(
                f"Can't truncate to max_length={limit} with '{strategy}': {excess} tokens must go and the {name} "
                f"text is {size}. Use a larger max_length or another truncation strategy."
            )
        kept = victim.head(len(victim) - excess)
        return (first, kept) if strategy == "only_second" else (kept, second)

    def _frame(self, first: _Tokens, second: _Tokens | None, add_special_tokens: bool) -> dict[str, Any]:
        """One row of model inputs: the texts' tokens with the family's special tokens around them."""
        ids0, ids1 = first.ids, None if second is None else second.ids
        if add_special_tokens:
            input_ids = self.build_inputs_with_special_tokens(ids0, ids1)
            type_ids = self.create_token_type_ids_from_sequences(ids0, ids1)
            special_mask = self.get_special_tokens_mask(ids0, ids1)
        else:  # nothing added, so nothing marked special (added tokens found in the text are content here)
            input_ids = ids0 + (ids1 or [])
            type_ids = [0] * len(ids0) + [1] * len(ids1 or [])
            special_mask = [0] * len(input_ids)
        row = {"input_ids": input_ids, "token_type_ids": type_ids, "attention_mask": [1] * len(input_ids)}
        row["special_tokens_mask"] = special_mask
        if first.offsets is not None:
            row["offset_mapping"] = self._framed_offsets(first, second, add_special_tokens)
        return row

    def _framed_offsets(self, first: _Tokens, second: _Tokens | None, add_special_tokens: bool) -> np.ndarray:
        before, between, after = self._affixes(second is not None) if add_special_tokens else ([], [], [])
        blocks = [np.zeros((len(before), 2), np.int64), first.offsets]
        if second is not None:
            blocks += [np.zeros((len(between), 2), np.int64), second.offsets]
        return np.concatenate(blocks + [np.zeros((len(after), 2), np.int64)])

    def _padded_width(
        self, rows: list[dict[str, Any]], padding: bool | str, max_length: int | None, multiple: int | None
    ) -> int | None:
        """The length every row is padded to, or None for no padding."""
        if padding is True:
            padding = "longest"
        if padding in (False, None, "do_not_pad"):
            return None
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"padding must be a bool or one of {PADDING_STRATEGIES}, not {padding!r}.")
        if padding == "longest":
            width = max(len(row["input_ids"]) for row in rows)
        else:
            width = max_length if max_length is not None else self.model_max_length
            if width is None:
                raise ValueError("padding='max_length' needs max_length: this tokenizer has no model_max_length.")
        if multiple:
            width = -(-width // multiple) * multiple
        return width

    def _pad(self, values: list[int] | np.ndarray, key: str, width: int | None) -> list[int] | np.ndarray:
        """Right-pad one row's column: pad id, type 0, attention 0, special 1, span (0, 0)."""
        missing = 0 if width is None else width - len(values)
        if missing <= 0:
            return values
        if key == "offset_mapping":
            return np.concatenate([values, np.zeros((missing, 2), np.int64)])
        fill = {"input_ids": self.pad_token_id, "special_tokens_mask": 1}.get(key, 0)
        return values + [fill] * missing

    # Decoding -----------------------------------------------------------------------------------------------

    def decode(
        self,
        token_ids: int | Sequence[int] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Text of `token_ids`: sentencepiece decodes the ordinary pieces, added tokens are written as they are."""
        ids = _as_ids(token_ids)
        ids = [ids] if isinstance(ids, int) else ids
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
        text = self._join_decoded(stretches)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for old, new in _CLEAN_UP_SPACES:
                text = text.replace(old, new)
        return text

    def batch_decode(
        self,
        sequences: Sequence[Any],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in _as_rows(sequences)]

    def _join_decoded(self, stretches: list[tuple[bool, str]]) -> str:
        """Join decoded stretches (is-added-token, text) into the final string."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.vocab_file)!r}, vocab_size={self.vocab_size})"


class BigBirdTokenizer(SentencePieceTokenizer):
    """BigBird's tokenizer: `[CLS] X [SEP]` and `[CLS] A [SEP] B [SEP]`, with sentencepiece ids as they are.

    The role tokens are looked up in the sentencepiece vocabulary (google/bigbird-roberta-base: `<pad>` 0, `<s>` 1,
    `</s>` 2, `[CLS]` 65, `[SEP]` 66, `[MASK]` 67, `<unk>` 100); one the vocabulary lacks gets the next free id.
    """

    token_keys = ("unk_token", "bos_token", "eos_token", "pad_token", "sep_token", "cls_token", "mask_token")

    def __init__(
        self,
        vocab_file: str | Path,
        *,
        unk_token: str | AddedToken = "<unk>",
        bos_token: str | AddedToken = "<s>",
        eos_token: str | AddedToken = "</s>",
        pad_token: str | AddedToken = "<pad>",
        sep_token: str | AddedToken = "[SEP]",
        cls_token: str | AddedToken = "[CLS]",
        mask_token: str | AddedToken = AddedToken("[MASK]", lstrip=True),
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        given = {"bos": bos_token, "eos": eos_token, "unk": unk_token, "sep": sep_token, "pad": pad_token}
        given |= {"cls": cls_token, "mask": mask_token}
        tokens = {role: _as_added(value, lstrip=role == "mask") for role, value in given.items()}
        sp = spm.SentencePieceProcessor(model_file=str(vocab_file))
        added: dict[int, AddedToken] = {}
        for token in tokens.values():
            index = sp.piece_to_id(token.content)
            if index == sp.unk_id() and token.content != sp.id_to_piece(index):
                index = max(sp.get_piece_size(), max(added, default=-1) + 1)
            added[index] = token
        super().__init__(
            vocab_file,
            sp,
            {role: token.content for role, token in tokens.items()},
            added,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )

    def _affixes(self, pair: bool) -> tuple[list[int], list[int], list[int]]:
        return [self.cls_token_id], [self.sep_token_id] if pair else [], [self.sep_token_id]

    def _join_decoded(self, stretches: list[tuple[bool, str]]) -> str:
        """Stretches joined by single spaces, except none before `[MASK]` and `[SEP]` (as BigBird's detokenizer)."""
        text = " ".join(piece if added else piece.strip() for added, piece in stretches)
        tight = "|".join(re.escape(token) for token in (self.mask_token, self.sep_token))
        return re.sub(f" ({tight})", r"\1", text)


class PegasusTokenizer(SentencePieceTokenizer):
    """Pegasus's tokenizer (BigBirdPegasus uses it): `X </s>`, no CLS, sentencepiece ids shifted up by `offset`.

    The first ids are reserved: `<pad>` 0, `</s>` 1, `<mask_1>` 2, `<mask_2>` 3, then `<unk_2>`, `<unk_3>`, ...,
    `<unk_{offset-1}>` from 4 on. With the usual offset of 103 that list runs to id 104, over the shifted ids of
    sentencepiece's own `<pad>` and `</s>` (unused by the model); sentencepiece's `<unk>` (2) becomes 105.
    """

    token_keys = ("pad_token", "eos_token", "unk_token", "mask_token", "mask_token_sent")
    setting_keys = SentencePieceTokenizer.setting_keys + ("offset",)

    def __init__(
        self,
        vocab_file: str | Path,
        *,
        pad_token: str | AddedToken = "<pad>",
        eos_token: str | AddedToken = "</s>",
        unk_token: str | AddedToken = "<unk>",
        mask_token: str | AddedToken = "<mask_2>",
        mask_token_sent: str | AddedToken = "<mask_1>",
        offset: int = 103,
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.id_offset = offset
        pad, eos, unk, mask = (_as_added(token) for token in (pad_token, eos_token, unk_token, mask_token))
        mask_sent = _as_added(mask_token_sent)
        reserved = [pad, eos, mask_sent, mask] + [AddedToken(f"<unk_{i}>") for i in range(2, offset)]
        added = dict(enumerate(reserved))
        sp = spm.SentencePieceProcessor(model_file=str(vocab_file))
        added.setdefault(sp.piece_to_id(unk.content) + offset, unk)
        self.mask_token_sent = mask_sent.content
        super().__init__(
            vocab_file,
            sp,
            {"eos": eos.content, "unk": unk.content, "pad": pad.content, "mask": mask.content},
            added,
            additional_special_tokens=[token.content for token in reserved[2:3] + reserved[4:]],
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )

    def _affixes(self, pair: bool) -> tuple[list[int], list[int], list[int]]:
        return [], [], [self.eos_token_id]

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for every reserved token in the ids (but not `<unk>`), and for the `</s>` that will be appended."""
        marked = self._special_id_set - {self.unk_token_id}
        if already_has_special_tokens:
            return [int(i in marked) for i in token_ids_0]
        return [int(i in marked) for i in token_ids_0 + (token_ids_1 or [])] + [1]

    def _join_decoded(self, stretches: list[tuple[bool, str]]) -> str:
        return "".join(piece for _, piece in stretches).strip()


# The tokenizer of each model type (config.json's `model_type`).
TOKENIZER_CLASSES: dict[str, type[SentencePieceTokenizer]] = {
    "big_bird": BigBirdTokenizer,
    "bigbird_pegasus": PegasusTokenizer,
}


def tokenizer_class(model_type: str) -> type[SentencePieceTokenizer]:
    """The tokenizer class checkpoints of this model type use."""
    return TOKENIZER_CLASSES[model_type]


# Training small sentencepiece models -------------------------------------------------------------------------


def train_bigbird_spm(
    texts: Sequence[str], out_dir: str | Path, vocab_size: int = 512, *, model_max_length: int = 4096
) -> int:
    """Train a BigBird-style sentencepiece model on `texts` and write a tokenizer checkpoint into `out_dir`.

    The special pieces sit where google/bigbird-roberta-base has them: `<pad>` 0, `<s>` 1, `</s>` 2, `[CLS]` 65,
    `[SEP]` 66, `[MASK]` 67, `<unk>` 100, with placeholder pieces `<unused_N>` filling 3-64 and 68-99, so tiny test
    checkpoints use the same ids as the real one. Returns the vocabulary size the model ended with.
    """
    fillers = [f"<unused_{i}>" for i in range(3, 100)]
    symbols = fillers[:62] + ["[CLS]", "[SEP]", "[MASK]"] + fillers[62:]
    options = {"pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 100, "user_defined_symbols": symbols}
    config = {"tokenizer_class": "BigBirdTokenizer", "model_max_length": model_max_length}
    token_map = {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "[SEP]",
        "cls_token": "[CLS]", "mask_token": {"content": "[MASK]", "lstrip": True, "rstrip": False},
    }  # fmt: skip
    return _train_spm(texts, Path(out_dir), vocab_size, options, config, token_map)


def train_pegasus_spm(
    texts: Sequence[str], out_dir: str | Path, vocab_size: int = 512, *, model_max_length: int = 4096
) -> int:
    """Train a Pegasus-style sentencepiece model on `texts` and write a tokenizer checkpoint into `out_dir`.

    As in google/pegasus-* and google/bigbird-pegasus-*: the sentencepiece model has `<pad>` 0, `</s>` 1, `<unk>` 2
    and no `<s>`; PegasusTokenizer adds the 103 reserved ids on top. Returns the tokenizer's vocabulary size
    (sentencepiece pieces + 103), which is what the model config's vocab_size must be.
    """
    options = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}
    config = {"tokenizer_class": "PegasusTokenizer", "model_max_length": model_max_length}
    token_map = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask_2>"}
    return _train_spm(texts, Path(out_dir), vocab_size, options, config, token_map) + 103


def _train_spm(
    texts: Sequence[str], out_dir: Path, vocab_size: int, options: dict[str, Any], config: dict, token_map: dict
) -> int:
    """Train a unigram model in memory (single-threaded, unshuffled: the same corpus gives the same bytes)."""
    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("No text to train a sentencepiece model on.")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        character_coverage=1.0,
        hard_vocab_limit=False,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 20,
        num_threads=1,
        minloglevel=2,
        **options,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(token_map, indent=2) + "\n", encoding="utf-8")
    return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


# Helpers ---------------------------------------------------------------------------------------------------


def _visible_spans(segment: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Sentencepiece's character spans with the whitespace a leading "▁" stands for left out.

    sentencepiece gives a "▁x" piece the whitespace run before it as well; a span should cover what the token
    shows, so an answer span cut from the text does not start with a blank. A piece that is only "▁" keeps an
    empty span where the next token starts. Pieces of one character that NFKC expands ("ﬁ" -> "f", "i") come
    back as sentencepiece gives them: the earlier pieces empty, the last one covering the whole character.
    """
    flat = np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets))
    spans = flat.reshape(-1, 2)
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


def _as_added(value: str | AddedToken, lstrip: bool = False) -> AddedToken:
    return value if isinstance(value, AddedToken) else AddedToken(value, lstrip=lstrip)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _longest_first_cuts(n_first: int, n_second: int, excess: int) -> tuple[int, int]:
    """How many tokens to cut from each text: first the longer one down towards the shorter's length, then the
    rest split evenly, the odd token coming off the second text (transformers' arithmetic, kept for parity)."""
    gap = min(abs(n_first - n_second), excess)
    rest = excess - gap
    if n_first > n_second:
        return gap + rest // 2, rest - rest // 2
    return rest // 2, gap + rest - rest // 2


def _as_batch(value: str | Sequence[str] | None, batched: bool, size: int) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) == batched:
        raise ValueError("text and text_pair must both be strings or both be lists of strings.")
    values = list(value) if batched else [value]
    if len(values) != size:
        raise ValueError(f"text has {size} entries and text_pair {len(values)}; they must pair up.")
    return values


def _as_ids(ids: Any) -> int | list[int]:
    """Ids given as an int, a list, a numpy array or a tensor (scalars included), as Python ints."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return int(ids) if isinstance(ids, int) else [int(i) for i in ids]


def _as_rows(sequences: Any) -> list[Any]:
    return sequences.tolist() if hasattr(sequences, "tolist") else list(sequences)


def _output(rows: list[Any], return_tensors: str | None, batched: bool) -> Any:
    """Rows as lists (offsets as lists of tuples), or as one 'pt' / 'np' array with a batch dimension."""
    if return_tensors is None:
        rows = [
            list(zip(row[:, 0].tolist(), row[:, 1].tolist(), strict=True)) if isinstance(row, np.ndarray) else row
            for row in rows
        ]
        return rows if batched else rows[0]
    if len({len(row) for row in rows}) > 1:
        raise ValueError("Rows have different lengths; pass padding=True to return them as tensors.")
    array = np.stack(rows) if isinstance(rows[0], np.ndarray) else np.array(rows, dtype=np.int64)
    if return_tensors == "np":
        return array
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(array)
    raise ValueError(f"return_tensors must be 'pt', 'np' or None, not {return_tensors!r}.")


__all__ = [
    "AddedToken",
    "BatchEncoding",
    "BigBirdTokenizer",
    "PegasusTokenizer",
    "SentencePieceTokenizer",
    "tokenizer_class",
    "train_bigbird_spm",
    "train_pegasus_spm",
]
