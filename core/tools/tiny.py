"""Tiny random checkpoints in the Hub layout, for the demo, the tests and the bench's smallest preset.

Real checkpoints can't be downloaded everywhere this toolkit runs (CI, air-gapped machines), so a small
model with random weights and a sentencepiece vocabulary trained on a built-in corpus stands in for one.
It exercises every code path (block-sparse attention included) but its outputs are meaningless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bigbird.models.presets import BIGBIRD_TINY, PEGASUS_TINY

# A few hundred words of plain English, enough to train a vocabulary of a few hundred pieces.
CORPUS = [
    "Plants create energy through photosynthesis, turning sunlight, water and carbon dioxide into sugar.",
    "The committee met on Tuesday to review the budget and approve the new repair schedule.",
    "Long documents need models that can read thousands of tokens without running out of memory.",
    "Sparse attention lets each token look at a window of neighbours, a few global tokens and random blocks.",
    "The tenant pays for minor repairs; the landlord pays for the roof, the walls and the heating.",
    "Researchers summarized the results of the trial in a short abstract at the top of the paper.",
    "A patent describes an invention, the problem it solves, and the claims that define its scope.",
    "Rivers carry sediment to the sea, where it settles and slowly builds wide, flat deltas.",
    "The museum opened a new wing with paintings, sculptures and a small library of rare books.",
    "Question answering finds the span of a document that answers a question about it.",
    "Every morning the baker lights the oven at four and the first bread is ready by six.",
    "Numbers like 42, 2024 and 3.14 appear in text as often as names like Ada, Alan and Grace.",
    "Summaries should be shorter than the source, faithful to it, and easy to read.",
    "The weather turned cold in November, and the first snow fell on the hills above the town.",
    "Classification assigns a label to a whole document, such as positive, negative or neutral.",
    "Masked language models predict a hidden word from the words around it on both sides.",
]

BIGBIRD_HEADS = {
    "model": "BigBirdModel",
    "masked_lm": "BigBirdForMaskedLM",
    "pretraining": "BigBirdForPreTraining",
    "causal_lm": "BigBirdForCausalLM",
    "sequence_classification": "BigBirdForSequenceClassification",
    "multiple_choice": "BigBirdForMultipleChoice",
    "token_classification": "BigBirdForTokenClassification",
    "question_answering": "BigBirdForQuestionAnswering",
}
PEGASUS_HEADS = {
    "model": "BigBirdPegasusModel",
    "conditional_generation": "BigBirdPegasusForConditionalGeneration",
    "sequence_classification": "BigBirdPegasusForSequenceClassification",
    "question_answering": "BigBirdPegasusForQuestionAnswering",
    "causal_lm": "BigBirdPegasusForCausalLM",
}


def make_tiny_checkpoint(
    out_dir: str | Path,
    family: str = "bigbird",
    head: str = "masked_lm",
    *,
    seed: int = 0,
    vocab_size: int = 400,
    corpus: list[str] | None = None,
    **config_overrides: Any,
) -> Path:
    """Write config.json, model.safetensors and a trained spiece.model (+ tokenizer config) to `out_dir`."""
    import bigbird
    from bigbird.models import tokenizers
    from bigbird.models.architectures import model_class

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = corpus or CORPUS
    if family == "bigbird":
        pieces = tokenizers.train_bigbird_spm(texts, out, vocab_size=vocab_size)
        config = bigbird.BigBirdConfig(**{**BIGBIRD_TINY, "vocab_size": pieces, **config_overrides})
        cls = model_class(BIGBIRD_HEADS[head])
    elif family == "pegasus":
        pieces = tokenizers.train_pegasus_spm(texts, out, vocab_size=vocab_size)
        config = bigbird.BigBirdPegasusConfig(**{**PEGASUS_TINY, "vocab_size": pieces, **config_overrides})
        cls = model_class(PEGASUS_HEADS[head])
    else:
        raise ValueError(f"family must be 'bigbird' or 'pegasus', not {family!r}")
    torch.manual_seed(seed)
    cls(config).save_pretrained(out)
    return out
