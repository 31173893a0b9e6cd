"""BigBird's and Pegasus's tokenizers: which special tokens each has, where their ids sit, and where they go
around a text, on either backend: `BigBirdTokenizer` and `PegasusTokenizer` on sentencepiece (spiece.model),
`BigBirdTokenizerFast` and `PegasusTokenizerFast` on Hugging Face's tokenizers (tokenizer.json, or spiece.model
converted). Everything else is shared (`framing.py` on `pieces.py` or `fast.py`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm
from tokenizers import Tokenizer

from .fast import TokenizersTokenizer, _backend_token, unigram_from_sentencepiece
from .framing import SentencePieceTokenizer
from .pieces import AddedToken, as_added_token

BIGBIRD_TOKEN_KEYS = ("unk_token", "bos_token", "eos_token", "pad_token", "sep_token", "cls_token", "mask_token")
PEGASUS_TOKEN_KEYS = ("pad_token", "eos_token", "unk_token", "mask_token", "mask_token_sent")


class BigBirdFraming:
    """`[CLS] X [SEP]` and `[CLS] A [SEP] B [SEP]`."""

    cls_token_id: int
    sep_token_id: int

    def _affixes(self, pair: bool) -> tuple[list[int], list[int], list[int]]:
        return [self.cls_token_id], [self.sep_token_id] if pair else [], [self.sep_token_id]


class PegasusFraming:
    """`X </s>` (a pair: `A B </s>`); every reserved id counts as special except `<unk>`."""

    eos_token_id: int
    unk_token_id: int
    _special_id_set: set[int]

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


class BigBirdTokenizer(BigBirdFraming, SentencePieceTokenizer):
    """BigBird's tokenizer: `[CLS] X [SEP]` and `[CLS] A [SEP] B [SEP]`, with sentencepiece ids as they are.

    The role tokens are looked up in the sentencepiece vocabulary (google/bigbird-roberta-base: `<pad>` 0, `<s>` 1,
    `</s>` 2, `[CLS]` 65, `[SEP]` 66, `[MASK]` 67, `<unk>` 100); one the vocabulary lacks gets the next free id.
    """

    token_keys = BIGBIRD_TOKEN_KEYS

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

    def _join_decoded(self, stretches: list[tuple[bool, str]]) -> str:
        """Stretches joined by single spaces, except none before `[MASK]` and `[SEP]` (as BigBird's detokenizer)."""
        text = " ".join(piece if added else piece.strip() for added, piece in stretches)
        tight = "|".join(re.escape(token) for token in (self.mask_token, self.sep_token))
        return re.sub(f" ({tight})", r"\1", text)


class PegasusTokenizer(PegasusFraming, SentencePieceTokenizer):
    """Pegasus's tokenizer (BigBirdPegasus uses it): `X </s>`, no CLS, sentencepiece ids shifted up by `offset`.

    The first ids are reserved: `<pad>` 0, `</s>` 1, `<mask_1>` 2, `<mask_2>` 3, then `<unk_2>`, `<unk_3>`, ...,
    `<unk_{offset-1}>` from 4 on. With the usual offset of 103 that list runs to id 104, over the shifted ids of
    sentencepiece's own `<pad>` and `</s>` (unused by the model); sentencepiece's `<unk>` (2) becomes 105.
    """

    token_keys = PEGASUS_TOKEN_KEYS
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

    def _join_decoded(self, stretches: list[tuple[bool, str]]) -> str:
        return "".join(piece for _, piece in stretches).strip()


class BigBirdTokenizerFast(BigBirdFraming, TokenizersTokenizer):
    """BigBird's tokenizer backed by Hugging Face's tokenizers library: a checkpoint's tokenizer.json as it is
    (`tokenizer_file`), or its spiece.model converted (`vocab_file`), framed as `BigBirdTokenizer` frames.

    The ids are the file's: a tokenizer.json saved by transformers 5 from a spiece.model can differ from the
    sentencepiece model on some text (it lacks the model's normalizer), and this class gives what that file gives.
    """

    token_keys = BIGBIRD_TOKEN_KEYS
    saved_class = "BigBirdTokenizer"

    def __init__(
        self,
        vocab_file: str | Path | None = None,
        tokenizer_file: str | Path | None = None,
        *,
        unk_token: str | AddedToken = "<unk>",
        bos_token: str | AddedToken = "<s>",
        eos_token: str | AddedToken = "</s>",
        pad_token: str | AddedToken = "<pad>",
        sep_token: str | AddedToken = "[SEP]",
        cls_token: str | AddedToken = "[CLS]",
        mask_token: str | AddedToken = AddedToken("[MASK]", lstrip=True),
        additional_special_tokens: Sequence[str] = (),
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        given = {"bos": bos_token, "eos": eos_token, "unk": unk_token, "sep": sep_token, "pad": pad_token}
        given |= {"cls": cls_token, "mask": mask_token}
        tokens = {role: as_added_token(value, lstrip=role == "mask") for role, value in given.items()}
        if tokenizer_file is not None:
            backend, source = _read_tokenizer_file(tokenizer_file), "tokenizer.json"
        elif vocab_file is not None:
            # Role tokens are matched in the raw text, except <unk>, which is matched in the normalized text (the
            # reference's converted tokenizer, as it runs in memory).
            specials = [_backend_token(token, special=True, normalized=role == "unk") for role, token in tokens.items()]
            backend, source = unigram_from_sentencepiece(vocab_file, specials=specials), "spiece.model"
        else:
            raise ValueError("BigBirdTokenizerFast needs a vocab_file (spiece.model) or a tokenizer_file.")
        super().__init__(
            backend,
            tokens,
            source=source,
            additional_special_tokens=additional_special_tokens,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """As `BigBirdTokenizer`'s, except that ids already framed count as special only where they are [CLS] or
        [SEP] (the reference's fast class marks no other)."""
        if already_has_special_tokens:
            return [int(i in (self.sep_token_id, self.cls_token_id)) for i in token_ids_0]
        return super().get_special_tokens_mask(token_ids_0, token_ids_1)


class PegasusTokenizerFast(PegasusFraming, TokenizersTokenizer):
    """Pegasus's tokenizer backed by Hugging Face's tokenizers library: a checkpoint's tokenizer.json as it is
    (`tokenizer_file`), or its spiece.model converted (`vocab_file`) with the `offset` reserved ids first, as
    `PegasusTokenizer` lays them out, framed as it frames.
    """

    token_keys = PEGASUS_TOKEN_KEYS
    setting_keys = TokenizersTokenizer.setting_keys + ("offset",)
    saved_class = "PegasusTokenizer"

    def __init__(
        self,
        vocab_file: str | Path | None = None,
        tokenizer_file: str | Path | None = None,
        *,
        pad_token: str | AddedToken = "<pad>",
        eos_token: str | AddedToken = "</s>",
        unk_token: str | AddedToken = "<unk>",
        mask_token: str | AddedToken = "<mask_2>",
        mask_token_sent: str | AddedToken = "<mask_1>",
        offset: int = 103,
        additional_special_tokens: Sequence[str] | None = None,
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        pad, eos, unk, mask = (as_added_token(token) for token in (pad_token, eos_token, unk_token, mask_token))
        mask_sent = as_added_token(mask_token_sent)
        reserved = [pad, eos, mask_sent, mask] + [AddedToken(f"<unk_{i}>") for i in range(2, offset)]
        if tokenizer_file is not None:
            backend, source = _read_tokenizer_file(tokenizer_file), "tokenizer.json"
        elif vocab_file is not None:
            scores = [0.0] * 4 + [-100.0] * (len(reserved) - 4)  # the <unk_i> never win a segmentation
            backend = unigram_from_sentencepiece(
                vocab_file,
                reserved=[(token.content, score) for token, score in zip(reserved, scores, strict=True)],
                first_piece=2,  # sentencepiece's own <pad> and </s> are the reserved ones
                split_at_whitespace=True,
                specials=[_backend_token(token, special=True, normalized=False) for token in reserved + [unk]],
            )
            source = "spiece.model"
        else:
            raise ValueError("PegasusTokenizerFast needs a vocab_file (spiece.model) or a tokenizer_file.")
        self.offset = offset
        self.mask_token_sent = mask_sent.content
        if additional_special_tokens is None:
            additional_special_tokens = [token.content for token in reserved[2:3] + reserved[4:]]
        super().__init__(
            backend,
            {"eos": eos, "unk": unk, "pad": pad, "mask": mask},
            source=source,
            additional_special_tokens=additional_special_tokens,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )


def _read_tokenizer_file(path: str | Path) -> Tokenizer:
    """A tokenizer.json, or one sentence on what is wrong with it."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises bare Exceptions on a malformed file
        raise ValueError(f"{path} is not a tokenizer.json the tokenizers library can read ({exc}).") from None
