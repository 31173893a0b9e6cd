"""Tokenizer oracle: runs transformers 4.56.2's sentencepiece tokenizers on cases sent as JSON, answers in JSON.
Also its question-answering pipeline, which transformers 5 no longer has: its span scoring
(`select_starts_ends`, plain numpy) and the whole pipeline on a QA checkpoint (`qa_pipeline`, which needs torch in
the oracle venv).

It runs in its own venv (transformers 4.56.2 needs huggingface_hub<1), started by tests/test_tokenizers.py as
`<oracle python> tests/tokenizer_oracle.py` with a JSON list of requests on stdin:

    [{"family": "bigbird" | "pegasus", "model_dir": "...", "cases": [{"op": ..., ...}, ...]}, ...]

and prints one JSON list per request with one result per case: {"value": ...} or {"error": "..."}. A request with
`"fast": true` runs the fast (tokenizers-backed) class instead, and one with `"save_to": "..."` saves the
tokenizer there with its save_pretrained before the cases run.
The ops and their arguments are those of `run_case` below; tests/test_tokenizers.py runs the same ops on ours.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import (  # noqa: E402
    BigBirdTokenizer,
    BigBirdTokenizerFast,
    PegasusTokenizer,
    PegasusTokenizerFast,
)

FAMILIES = {"bigbird": BigBirdTokenizer, "pegasus": PegasusTokenizer}
FAST_FAMILIES = {"bigbird": BigBirdTokenizerFast, "pegasus": PegasusTokenizerFast}


def run_case(tokenizer: Any, case: dict) -> Any:
    """One operation on the tokenizer, its result as plain JSON values."""
    op = case["op"]
    if op == "call":
        encoding = tokenizer(case["text"], case.get("text_pair"), **case.get("kwargs", {}))
        return {key: _plain(value) for key, value in encoding.items()}
    if op == "tokenize":
        return tokenizer.tokenize(case["text"])
    if op == "encode_decode":
        return tokenizer.decode(tokenizer(case["text"])["input_ids"], **case.get("kwargs", {}))
    if op == "decode":
        return tokenizer.decode(case["ids"], **case.get("kwargs", {}))
    if op == "ids_to_tokens":
        return tokenizer.convert_ids_to_tokens(case["ids"], skip_special_tokens=case.get("skip", False))
    if op == "tokens_to_ids":
        return tokenizer.convert_tokens_to_ids(case["tokens"])
    if op == "special_mask":
        return tokenizer.get_special_tokens_mask(case["ids0"], case.get("ids1"), case.get("already", False))
    if op == "qa_spans":  # logits of one window → the pipeline's best spans and null score
        import numpy as np
        from transformers.pipelines.question_answering import select_starts_ends

        starts, ends, scores, null = select_starts_ends(
            np.array([case["start"]]),
            np.array([case["end"]]),
            np.array([case["p_mask"]]),
            np.array([case["attention_mask"]]),
            top_k=case["top_k"],
            handle_impossible_answer=case["handle_impossible_answer"],
            max_answer_len=case["max_answer_len"],
        )
        return {"starts": starts.tolist(), "ends": ends.tolist(), "scores": scores.tolist(), "null": float(null)}
    if op == "qa_pipeline":  # the whole question-answering pipeline (needs torch here) on a QA checkpoint
        answers = _qa_pipeline(case["model_dir"])(question=case["question"], context=case["context"], **case["kwargs"])
        return answers if isinstance(answers, list) else [answers]
    if op == "attrs":
        names = ["vocab_size", "model_max_length", "all_special_ids", "all_special_tokens"]
        names += [f"{role}_token_id" for role in ("pad", "eos", "unk", "mask", "cls", "sep", "bos")]
        values = {name: getattr(tokenizer, name) for name in names}
        values["len"] = len(tokenizer)
        return values
    raise ValueError(f"unknown op {op!r}")


_PIPELINES: dict[str, Any] = {}


def _qa_pipeline(model_dir: str) -> Any:
    """4.56's question-answering pipeline on the checkpoint, with its default (fast) tokenizer; made once per
    checkpoint."""
    if model_dir not in _PIPELINES:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

        model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        _PIPELINES[model_dir] = pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu")
    return _PIPELINES[model_dir]


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _answer(case: dict, tokenizer: Any) -> dict:
    try:
        return {"value": run_case(tokenizer, case)}
    except Exception as exc:  # the test decides whether an error was expected
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    requests = json.load(sys.stdin)
    answers = []
    for request in requests:
        classes = FAST_FAMILIES if request.get("fast") else FAMILIES
        tokenizer = classes[request["family"]].from_pretrained(request["model_dir"])
        if request.get("save_to"):
            tokenizer.save_pretrained(request["save_to"])
        answers.append([_answer(case, tokenizer) for case in request["cases"]])
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
