"""Training small sentencepiece models in the checkpoint layout of each family (tests, the demo, the bench)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm


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
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "sep_token": "[SEP]",
        "cls_token": "[CLS]",
        "mask_token": {"content": "[MASK]", "lstrip": True, "rstrip": False},
    }
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
