"""core/models/tokenizers.py against transformers 4.56.2's sentencepiece tokenizers and against sentencepiece itself.

The oracle runs in its own venv (see the Makefile): BIGBIRD_TOKENIZER_ORACLE names its python, else the repo's
.venv-tokenizer-oracle/bin/python. A missing oracle fails the parity tests: skipped parity would hide drift.
Both sides tokenize with sentencepiece models trained here, with the special pieces laid out as in the real
checkpoints, and every expected value comes from the oracle or sentencepiece in this same run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sentencepiece as spm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bigbird.models.tokenizers import (
    AddedToken,
    BigBirdTokenizer,
    PegasusTokenizer,
    train_bigbird_spm,
    train_pegasus_spm,
)

REPO = Path(__file__).resolve().parents[1]
ORACLE_SCRIPT = Path(__file__).with_name("tokenizer_oracle.py")
FAMILIES = {"bigbird": BigBirdTokenizer, "pegasus": PegasusTokenizer}

# Characters the property tests draw from. Every one (in its NFKC form) is in the training corpus, except those
# in UNKNOWN_CHARS, which exercise <unk>.
KNOWN_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/")
KNOWN_CHARS += list("ﬁﬂﬃＡＢＣａｂｃ１２éèüñçÅαβγжд漢字①②㎏") + ["\u0301", "\u0308"]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", " \t\n "]
UNKNOWN_CHARS = ["😀", "☃", "ꙮ"]

LONG_TEXT = " ".join(
    f"Paragraph {i}: the ﬁrst\tline of ＦＵＬＬ width text,\nthen  more   words (café, naïve) ①." for i in range(250)
)
TEXTS = [
    "",
    " ",
    "Hello world!",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\nand\t\ttwo",
    "runs     of    spaces",
    "ﬁnance ﬂow ﬃ oﬃce",
    "ＦＵＬＬ ｗｉｄｔｈ １２３",
    "café naïve cafe\u0301 Å",
    "①②③ ㎏ five",
    "emoji 😀 and ☃ unknown",
    "CJK 漢字 and Greek αβγ and жд",
    "\u3000ideographic\u00a0no-break space",
    "Don't , isn't . ? ! they 're",
    "[MASK] at the start",
    "the [MASK].",
    "a  \t[MASK]b [MASK][MASK]",
    "<s> and </s> and <pad> and [CLS] [SEP] <unk> inline",
    "<mask_1> then <mask_2>, <unk_7><unk_102> and <unk> inline",
    LONG_TEXT[:3000],
]
PAIRS = [
    ("What is ﬁnance?", "Finance is the study of money.\n\tIt has  ＦＵＬＬ width words."),
    ("Who?", LONG_TEXT[:600]),
    (LONG_TEXT[:400], "short second"),
    ("", "empty first"),
    ("the [MASK] question", "a context with [SEP] inside"),
]


def corpus() -> list[str]:
    """A small deterministic corpus covering every character the tests use."""
    rng = random.Random(0)
    words = "the quick brown fox jumps over lazy dog finance study money question answer paragraph line text".split()
    words += "width words more then first office flow who what short second empty context inside five kg".split()
    syllables = "ka lo mi ne ru sa te vi zo pa an er in on st th ch qu ex ly".split()
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(600)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + rng.choice(".,!?") for _ in range(400)]
    lines += [t for t in TEXTS + [p for pair in PAIRS for p in pair] if not any(c in t for c in UNKNOWN_CHARS)]
    lines.append(" ".join(unicodedata.normalize("NFKC", c) for c in KNOWN_CHARS))
    return lines


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    texts = corpus()
    train_bigbird_spm(texts, root / "bigbird", vocab_size=600)
    train_pegasus_spm(texts, root / "pegasus", vocab_size=500)
    return {"bigbird": root / "bigbird", "pegasus": root / "pegasus"}


@pytest.fixture(scope="session")
def tokenizers(model_dirs: dict[str, Path]) -> dict[str, Any]:
    return {family: cls.from_pretrained(model_dirs[family]) for family, cls in FAMILIES.items()}


# Parity cases -------------------------------------------------------------------------------------------------


def cases(family: str) -> list[dict]:
    """Every operation compared with the oracle, as JSON-able dicts."""
    out: list[dict] = [{"op": "attrs"}]
    for text in TEXTS:
        out.append({"op": "tokenize", "text": text})
        out.append({"op": "call", "text": text, "kwargs": {"return_token_type_ids": family == "bigbird"}})
        out.append({"op": "call", "text": text, "kwargs": {"add_special_tokens": False}})
        for kwargs in ({}, {"skip_special_tokens": True}, {"clean_up_tokenization_spaces": True}):
            out.append({"op": "encode_decode", "text": text, "kwargs": kwargs})
    for max_length in (3, 10, 57):
        for strategy in ("longest_first", "only_first", True):
            out.append(
                {"op": "call", "text": LONG_TEXT[:500], "kwargs": {"truncation": strategy, "max_length": max_length}}
            )
    # Pegasus' transformers token_type_ids have one entry too few for pairs (no slot for </s>); ours don't.
    type_ids = family == "bigbird"
    for first, second in PAIRS:
        out.append({"op": "call", "text": first, "text_pair": second, "kwargs": {"return_token_type_ids": type_ids}})
        for max_length in (12, 33, 80):
            for strategy in ("longest_first", "only_first", "only_second"):
                kwargs = {"truncation": strategy, "max_length": max_length, "return_token_type_ids": type_ids}
                out.append({"op": "call", "text": first, "text_pair": second, "kwargs": kwargs})
    batch = TEXTS[2:9]
    out.append({"op": "call", "text": batch, "kwargs": {"padding": True}})
    out.append({"op": "call", "text": batch, "kwargs": {"padding": "max_length", "max_length": 40}})
    out.append({"op": "call", "text": batch, "kwargs": {"padding": "longest", "pad_to_multiple_of": 8}})
    out.append({"op": "call", "text": batch, "kwargs": {"padding": True, "truncation": True, "max_length": 9}})
    out.append({"op": "call", "text": batch, "kwargs": {"return_special_tokens_mask": True}})
    firsts, seconds = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    bare = {"add_special_tokens": False, "return_special_tokens_mask": True}
    out.append({"op": "call", "text": firsts, "text_pair": seconds, "kwargs": bare | {"padding": True}})
    out.append({"op": "call", "text": TEXTS, "kwargs": bare})
    kwargs = {"padding": True, "truncation": "only_second", "max_length": 30, "return_token_type_ids": type_ids}
    out.append({"op": "call", "text": firsts[:2], "text_pair": seconds[:2], "kwargs": kwargs})
    size = 450  # below both vocabularies (checked in test_special_ids_are_laid_out_as_in_the_real_checkpoints)
    out.append({"op": "ids_to_tokens", "ids": list(range(size))})
    out.append({"op": "ids_to_tokens", "ids": list(range(size)), "skip": True})
    out.append({"op": "tokens_to_ids", "tokens": ["[MASK]", "<mask_1>", "<unk>", "▁the", "no-such-piece", "<s>", "a"]})
    ids = list(range(0, size, 7)) + [0, 1, 2, 3, 65, 66, 67, 100, 103, 104, 105, 106]
    for kwargs in ({}, {"skip_special_tokens": True}, {"clean_up_tokenization_spaces": True}):
        out.append({"op": "decode", "ids": ids, "kwargs": kwargs})
    mixed = [5, 66, 105, 1, 0, 2, 3, 4, 65, 67, 100, 104]
    out.append({"op": "special_mask", "ids0": mixed, "already": True})
    out.append({"op": "special_mask", "ids0": mixed[:5]})
    out.append({"op": "special_mask", "ids0": mixed[:5], "ids1": mixed[5:]})
    return out


def run_case(tokenizer: Any, case: dict) -> Any:
    """Our side of tests/tokenizer_oracle.py's run_case, results as the JSON the oracle sends back."""
    op = case["op"]
    if op == "call":
        encoding = tokenizer(case["text"], case.get("text_pair"), **case.get("kwargs", {}))
        value: Any = dict(encoding)
    elif op == "tokenize":
        value = tokenizer.tokenize(case["text"])
    elif op == "encode_decode":
        value = tokenizer.decode(tokenizer(case["text"])["input_ids"], **case.get("kwargs", {}))
    elif op == "decode":
        value = tokenizer.decode(case["ids"], **case.get("kwargs", {}))
    elif op == "ids_to_tokens":
        value = tokenizer.convert_ids_to_tokens(case["ids"], skip_special_tokens=case.get("skip", False))
    elif op == "tokens_to_ids":
        value = tokenizer.convert_tokens_to_ids(case["tokens"])
    elif op == "special_mask":
        value = tokenizer.get_special_tokens_mask(case["ids0"], case.get("ids1"), case.get("already", False))
    elif op == "attrs":
        names = ["vocab_size", "model_max_length", "all_special_ids", "all_special_tokens"]
        names += [f"{role}_token_id" for role in ("pad", "eos", "unk", "mask", "cls", "sep", "bos")]
        value = {name: getattr(tokenizer, name) for name in names} | {"len": len(tokenizer)}
    else:
        raise ValueError(op)
    return json.loads(json.dumps(value))


def oracle_python() -> Path:
    configured = os.environ.get("BIGBIRD_TOKENIZER_ORACLE")
    path = Path(configured) if configured else REPO / ".venv-tokenizer-oracle" / "bin" / "python"
    if not path.exists():
        pytest.fail(
            f"Tokenizer oracle python not found at {path}. Create it with `make .venv-tokenizer-oracle/.installed` "
            "(transformers 4.56.2 + sentencepiece) or point BIGBIRD_TOKENIZER_ORACLE at one."
        )
    return path


@pytest.fixture(scope="session")
def oracle_answers(model_dirs: dict[str, Path]) -> dict[str, list[dict]]:
    """All parity cases of both families, answered by one oracle process."""
    return ask_oracle({f: (f, model_dirs[f]) for f in FAMILIES})


def ask_oracle(requests: dict[str, tuple[str, Path]]) -> dict[str, list[dict]]:
    """Every parity case of a family, run by the reference on each named (family, tokenizer folder)."""
    payload = [{"family": f, "model_dir": str(d), "cases": cases(f)} for f, d in requests.values()]
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(oracle_python()), str(ORACLE_SCRIPT)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"tokenizer oracle failed:\n{done.stderr[-3000:]}")
    return dict(zip(requests, json.loads(done.stdout), strict=True))


CASE_IDS = [(family, i) for family in FAMILIES for i in range(len(cases(family)))]


@pytest.mark.parametrize(("family", "index"), CASE_IDS, ids=[f"{f}-{i}" for f, i in CASE_IDS])
def test_parity_with_transformers_456(family: str, index: int, tokenizers: dict, oracle_answers: dict) -> None:
    assert_case_matches(tokenizers[family], cases(family)[index], oracle_answers[family][index])


def assert_case_matches(tokenizer: Any, case: dict, answer: dict) -> None:
    assert "error" not in answer, f"oracle failed on {case}: {answer['error']}"
    try:
        ours = run_case(tokenizer, case)
    except ValueError as exc:
        # Where the chosen side is too short to cut, transformers logs an error and returns the pair uncut; we
        # raise. Such a case must be one transformers could not fit either.
        assert "Can't truncate" in str(exc)
        assert len(answer["value"]["input_ids"]) > case["kwargs"]["max_length"]
        return
    assert ours == answer["value"], case


def test_save_pretrained_is_read_back_the_same_here_and_by_the_reference(
    tokenizers: dict, model_dirs: dict, oracle_answers: dict, tmp_path: Path
) -> None:
    """Each family's tokenizer saved by us reads back, here and in transformers 4.56.2, as the folder it came
    from; so does a BigBird one with settings of its own (a [MASK] that keeps the space before it, a length
    limit). There was no save_pretrained or save_vocabulary, so a fine-tuned model could not be saved whole."""
    saved = {family: (family, tmp_path / family) for family in FAMILIES}
    for family, tokenizer in tokenizers.items():
        written = tokenizer.save_pretrained(tmp_path / family)
        names = sorted(Path(p).name for p in written)
        assert names == ["special_tokens_map.json", "spiece.model", "tokenizer_config.json"]
    custom = BigBirdTokenizer(model_dirs["bigbird"] / "spiece.model", mask_token="[MASK]", model_max_length=77)
    custom.save_pretrained(tmp_path / "custom")
    saved["custom"] = ("bigbird", tmp_path / "custom")
    answers = ask_oracle(saved)
    for name, (family, folder) in saved.items():
        reloaded = FAMILIES[family].from_pretrained(folder)
        for case, answer in zip(cases(family), answers[name], strict=True):
            assert_case_matches(reloaded, case, answer)
        if name != "custom":
            assert answers[name] == oracle_answers[family]
    assert answers["custom"][0]["value"]["model_max_length"] == 77
    assert answers["custom"] != oracle_answers["bigbird"]  # "the [MASK]." keeps its "▁" piece now


def test_save_vocabulary_writes_the_sentencepiece_model(tokenizers: dict, model_dirs: dict, tmp_path: Path) -> None:
    for family, tokenizer in tokenizers.items():
        (path,) = tokenizer.save_vocabulary(tmp_path, filename_prefix=family)
        assert Path(path) == tmp_path / f"{family}-spiece.model"
        assert Path(path).read_bytes() == (model_dirs[family] / "spiece.model").read_bytes()
        with pytest.raises(NotADirectoryError, match="is not a folder"):
            tokenizer.save_vocabulary(tmp_path / "missing")


# Sentencepiece itself --------------------------------------------------------------------------------------


PLAIN_TEXTS = [t for t in TEXTS if "<" not in t and "[" not in t] + [LONG_TEXT]


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_text_is_sentencepiece(family: str, tokenizers: dict, model_dirs: dict) -> None:
    """Without added tokens in the text, pieces, ids, spans and decoding are sentencepiece's own."""
    tokenizer = tokenizers[family]
    sp = spm.SentencePieceProcessor(model_file=str(model_dirs[family] / "spiece.model"))
    shift = tokenizer.id_offset
    for text in PLAIN_TEXTS:
        reference = sp.encode(text, out_type="offset_mapping")
        ours = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert tokenizer.tokenize(text) == sp.encode(text, out_type=str)
        assert ours["input_ids"] == [i + shift for i in reference["ids"]]
        for (start, end), (sp_start, sp_end) in zip(ours["offset_mapping"], reference["offsets"], strict=True):
            # Same end; the start only moves past the whitespace a leading "▁" stands for.
            assert end == sp_end and sp_start <= start <= end
            assert text[sp_start:start].strip() == ""
        if family == "pegasus" and not any(c in text for c in UNKNOWN_CHARS):  # <unk> decodes as " ⁇ " there
            assert tokenizer.decode(ours["input_ids"]) == sp.decode(reference["ids"])


# Properties ------------------------------------------------------------------------------------------------


def groups(spans: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """Tokens grouped so each group ends with a token of non-empty span, with the empty-span tokens before it.

    sentencepiece gives a character that NFKC expands into several pieces ("ﬁ" -> "▁f", "i") to the last of
    them; the earlier ones (and bare "▁" pieces) have empty spans at the same place."""
    out, pending = [], []
    for i, (start, end) in enumerate(spans):
        pending.append(i)
        if end > start:
            out.append((spans[pending[0]][0], end, pending))
            pending = []
    if pending:
        out.append((spans[pending[0]][0], spans[pending[-1]][1], pending))
    return out


texts_with_everything = st.lists(
    st.sampled_from(KNOWN_CHARS + WHITESPACE + UNKNOWN_CHARS + ["[MASK]", " [MASK] ", "<s>", "<mask_1>", "word "]),
    max_size=40,
).map("".join)
# Bare combining marks would compose with any letter into characters the vocabulary lacks.
COMPOSED = [c for c in KNOWN_CHARS if not unicodedata.combining(c)] + ["e\u0301", "u\u0308", " \u0301"]
known_texts = st.lists(st.sampled_from(COMPOSED + WHITESPACE + ["word "]), max_size=40).map("".join)


@pytest.mark.parametrize("family", FAMILIES)
def test_offsets_slice_the_original_text(family: str, tokenizers: dict) -> None:
    tokenizer = tokenizers[family]

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(texts_with_everything)
    def check(text: str) -> None:
        pieces = tokenizer.tokenize(text)
        spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert len(spans) == len(pieces)
        previous_end = 0
        for start, end, members in groups(spans):
            assert previous_end <= start <= end <= len(text)
            assert all(spans[i] == (start, start) for i in members[:-1])
            surface = "".join(pieces[i] for i in members).replace("▁", "")
            assert unicodedata.normalize("NFKC", text[start:end]) == unicodedata.normalize("NFKC", surface)
            previous_end = end

    check()


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_inverts_encode_up_to_normalization(family: str, tokenizers: dict) -> None:
    tokenizer = tokenizers[family]

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(known_texts)
    def check(text: str) -> None:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == " ".join(unicodedata.normalize("NFKC", text).split())

    check()


# Behaviour -------------------------------------------------------------------------------------------------


def test_special_ids_are_laid_out_as_in_the_real_checkpoints(tokenizers: dict) -> None:
    bigbird, pegasus = tokenizers["bigbird"], tokenizers["pegasus"]
    ids = [bigbird.pad_token_id, bigbird.bos_token_id, bigbird.eos_token_id, bigbird.cls_token_id]
    ids += [bigbird.sep_token_id, bigbird.mask_token_id, bigbird.unk_token_id]
    assert ids == [0, 1, 2, 65, 66, 67, 100]
    assert [pegasus.pad_token_id, pegasus.eos_token_id, pegasus.mask_token_id, pegasus.unk_token_id] == [0, 1, 3, 105]
    assert pegasus.convert_tokens_to_ids(["<mask_1>", "<unk_2>", "<unk_102>"]) == [2, 4, 104]
    assert pegasus.cls_token_id is None and pegasus.sep_token_id is None
    assert bigbird.model_max_length == pegasus.model_max_length == 4096
    assert bigbird("x").input_ids[0] == 65 and pegasus("x").input_ids[-1] == 1
    assert min(len(bigbird), len(pegasus)) > 450  # the parity cases convert ids up to 449


def test_training_is_deterministic(tmp_path: Path) -> None:
    texts = corpus()
    sizes = [train_bigbird_spm(texts, tmp_path / name, vocab_size=500) for name in ("a", "b")]
    sizes += [train_pegasus_spm(texts, tmp_path / name, vocab_size=400) for name in ("c", "d")]
    assert (tmp_path / "a" / "spiece.model").read_bytes() == (tmp_path / "b" / "spiece.model").read_bytes()
    assert (tmp_path / "c" / "spiece.model").read_bytes() == (tmp_path / "d" / "spiece.model").read_bytes()
    assert sizes[0] == len(BigBirdTokenizer.from_pretrained(tmp_path / "a"))
    assert sizes[2] == len(PegasusTokenizer.from_pretrained(tmp_path / "c")) == sizes[3]


def test_tensors_and_batch_encoding(tokenizers: dict) -> None:
    tokenizer = tokenizers["bigbird"]
    batch = tokenizer(
        ["one text", "a second, longer text"], padding=True, return_tensors="pt", return_offsets_mapping=True
    )
    assert batch.input_ids.dtype == torch.long and batch.input_ids.shape == batch["attention_mask"].shape
    assert batch.offset_mapping.shape == (*batch.input_ids.shape, 2)
    assert batch.to("cpu").input_ids.equal(batch.input_ids)
    assert tokenizer("one", return_tensors="pt").input_ids.shape[0] == 1
    assert tokenizer("one", return_tensors="np")["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["one", "two three four"], return_tensors="pt")
    with pytest.raises(AttributeError):
        _ = batch.no_such_key


def test_question_spans_survive_truncating_only_the_context(tokenizers: dict) -> None:
    tokenizer = tokenizers["bigbird"]
    question, context = "Who wrote  it?", LONG_TEXT
    out = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=64,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    assert len(out.input_ids) == 64
    types, spans = out.token_type_ids, out.offset_mapping
    question_spans = [
        s
        for s, t, m in zip(
            spans, types, tokenizer.get_special_tokens_mask(out.input_ids, already_has_special_tokens=True), strict=True
        )
        if t == 0 and not m
    ]
    assert "".join(question[a:b] for a, b in question_spans) == "Whowroteit?"
    context_spans = [s for s, t in zip(spans[:-1], types[:-1], strict=True) if t == 1]
    assert context[context_spans[0][0] : context_spans[-1][1]].startswith("Paragraph 0: the ﬁrst")


def test_ids_in_any_container_and_pegasus_type_ids(tokenizers: dict) -> None:
    bigbird, pegasus = tokenizers["bigbird"], tokenizers["pegasus"]
    ids = bigbird("the quick fox").input_ids
    text = bigbird.decode(ids)
    assert bigbird.decode(torch.tensor(ids)) == bigbird.decode(np.array(ids)) == text
    assert bigbird.batch_decode(torch.tensor([ids, ids])) == [text, text]
    assert bigbird.convert_ids_to_tokens(np.int64(67)) == bigbird.convert_ids_to_tokens(torch.tensor(67)) == "[MASK]"
    # transformers 4.56.2 gives Pegasus pairs one token type too few; ours cover the </s> too.
    out = pegasus("first part", "second part", return_token_type_ids=True)
    assert len(out.token_type_ids) == len(out.input_ids) and out.token_type_ids[-1] == 1


def test_token_flags_come_from_the_checkpoint_files(model_dirs: dict, tmp_path: Path) -> None:
    (tmp_path / "spiece.model").write_bytes((model_dirs["bigbird"] / "spiece.model").read_bytes())
    mask = {"content": "[MASK]", "lstrip": False, "rstrip": True}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"mask_token": mask}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 10**30}))
    tokenizer = BigBirdTokenizer.from_pretrained(tmp_path)
    assert tokenizer.model_max_length is None
    assert tokenizer.added_tokens_decoder[67] == AddedToken("[MASK]", lstrip=False, rstrip=True)
    assert BigBirdTokenizer(model_dirs["bigbird"] / "spiece.model").added_tokens_decoder[67].lstrip  # the default
    with pytest.raises(ValueError, match="model_max_length"):
        tokenizer("a", padding="max_length")


def test_truncation_that_cannot_fit(tokenizers: dict) -> None:
    tokenizer = tokenizers["bigbird"]
    with pytest.raises(ValueError, match="only_second"):
        tokenizer("a long question " * 20, "ctx", truncation="only_second", max_length=10)
    with pytest.raises(ValueError, match="only_first"):
        tokenizer("q", "a long context " * 20, truncation="only_first", max_length=10)
    with pytest.raises(ValueError, match="truncation"):
        tokenizer("q", truncation="sideways", max_length=10)
    assert len(tokenizer("word " * 5000, truncation=True).input_ids) == 4096  # model_max_length


def test_a_megabyte_document_tokenizes_with_offsets(tokenizers: dict) -> None:
    """A 1 MB document goes through in one call, ids and spans alike (speed is the bench's job, not a test's)."""
    words = "the quick brown fox jumps over a lazy dog ﬁnance café ＦＵＬＬ naïve ① tabs\tand\nlines".split(" ")
    rng = random.Random(1)
    document = " ".join(rng.choice(words) for _ in range(200_000))[:1_000_000]
    for tokenizer in tokenizers.values():
        plain = tokenizer(document)
        out = tokenizer(document, return_offsets_mapping=True)
        assert out.input_ids == plain.input_ids and len(out.input_ids) > 100_000
        spans = out.offset_mapping
        assert len(spans) == len(out.input_ids)
        assert all(0 <= a <= b <= len(document) for a, b in spans)


def test_missing_oracle_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BIGBIRD_TOKENIZER_ORACLE", str(tmp_path / "nope" / "python"))
    with pytest.raises(pytest.fail.Exception, match="make .venv-tokenizer-oracle"):
        oracle_python()


def test_oracle_is_transformers_456() -> None:
    version = subprocess.run(
        [str(oracle_python()), "-c", "import transformers; print(transformers.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"),
    ).stdout.split()[-1]
    assert version == "4.56.2"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
