"""The reference's rules on top of a piece core: special tokens around one text or a pair, truncation
strategies, padding, and the columns a call returns (`input_ids`, `attention_mask`, `offset_mapping`, ...).

A family says only where its special tokens go (`_affixes`); everything that follows from that is here, so the
tasks ask the tokenizer how a text is framed instead of knowing it themselves. The pieces under it come from
either backend (`Framing` reads only the core's `encode_texts`, its special ids and `model_max_length`):
sentencepiece (`SentencePieceTokenizer`, here) or Hugging Face's tokenizers (`TokenizersTokenizer`, fast.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .pieces import SentencePieceCore, Tokens

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
PADDING_STRATEGIES = ("longest", "max_length")


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


class Framing:
    """What every tokenizer here shares above its piece core: texts framed, truncated and padded as the
    reference does it. A family sets the special tokens around one or two texts in `_affixes`."""

    # From the piece core beside it in a class's bases (`encode_texts` too: tokens of many texts, with spans).
    pad_token_id: int | None
    model_max_length: int | None
    _special_id_set: set[int]

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
        encoded = self.encode_texts(firsts + (seconds or []), return_offsets_mapping)
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
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
        )
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
        self, first: Tokens, second: Tokens | None, limit: int, strategy: str, add_special_tokens: bool
    ) -> tuple[Tokens, Tokens | None]:
        """Drop tokens from the end of the first and/or second text until the framed sequence fits `limit`."""
        specials = self.num_special_tokens_to_add(second is not None) if add_special_tokens else 0
        excess = len(first) + (len(second) if second is not None else 0) + specials - limit
        if excess <= 0:
            return first, second
        if strategy == "longest_first" and second is not None:
            cut_first, cut_second = self._pair_cuts(len(first), len(second), excess)
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

    def _pair_cuts(self, n_first: int, n_second: int, excess: int) -> tuple[int, int]:
        """How "longest_first" shares the cut between a pair's texts (the reference's fast tokenizers share it
        their own way: `TokenizersTokenizer._pair_cuts`)."""
        return _longest_first_cuts(n_first, n_second, excess)

    def _frame(self, first: Tokens, second: Tokens | None, add_special_tokens: bool) -> dict[str, Any]:
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

    def _framed_offsets(self, first: Tokens, second: Tokens | None, add_special_tokens: bool) -> np.ndarray:
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


class SentencePieceTokenizer(Framing, SentencePieceCore):
    """A family's tokenizer on sentencepiece (a checkpoint's spiece.model)."""


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
