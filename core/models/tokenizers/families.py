"""BigBird's and Pegasus's tokenizers: which special tokens each has, where their ids sit, and where they go
around a text. Everything else is shared (`framing.py` on `pieces.py`)."""

from __future__ import annotations

import re
from pathlib import Path

import sentencepiece as spm

from .framing import SentencePieceTokenizer
from .pieces import AddedToken, as_added_token


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
        tokens = {role: as_added_token(value, lstrip=role == "mask") for role, value in given.items()}
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
        pad, eos, unk, mask = (as_added_token(token) for token in (pad_token, eos_token, unk_token, mask_token))
        mask_sent = as_added_token(mask_token_sent)
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

    @property
    def offset(self) -> int:
        """How many ids are reserved below sentencepiece's (the reference's name for it)."""
        return self.id_offset

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
