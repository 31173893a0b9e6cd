"""Every task on a checkpoint written by transformers 5 (`save_pretrained` of model and tokenizer: tokenizer.json,
no spiece.model), as a fine-tune writes it, with and without tokens added by `add_tokens` and resized embeddings,
against transformers 5.23 computing the same records from the same folder in this run; and the tokenizers that
don't belong to their model, refused before the first document (exit 2) or failing documents one by one.

The tokenizer was converted by transformers 5 from a sentencepiece model trained here, for both families.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import jsonl
from test_fast_tokenizers import OFFSET_TEXTS

from bigbird.tasks import ClassifyTask, MaskTask, QATask, SummarizeTask
from bigbird.tasks.base import TaskError
from bigbird.tasks.documents import Document
from bigbird.tools.tiny import make_tiny_checkpoint

ADDED = ["[CITY]", "[DATE]"]
QUESTION = "When does the train to [CITY] leave?"
TEXTS = [
    "The train to [CITY] leaves on [DATE] at noon; the museum opens later.",
    "Rivers carry sediment to the sea,\nwhere it settles  and builds deltas. café 漢字 😀",
]
MASKED = ["The train to [CITY] leaves on [MASK] at noon.", "Rivers [MASK] sediment to the [MASK]."]
HYPOTHESES = ["It leaves at noon.", "The sea builds [DATE] deltas."]

# name → (family, our head, the reference's class, config overrides)
CHECKPOINTS = {
    "classify": (
        "bigbird",
        "sequence_classification",
        "BigBirdForSequenceClassification",
        {"id2label": {0: "no", 1: "maybe", 2: "yes"}},
    ),
    "pegasus-classify": (
        "pegasus",
        "sequence_classification",
        "BigBirdPegasusForSequenceClassification",
        {"id2label": {0: "no", 1: "yes"}},
    ),
    "qa": ("bigbird", "question_answering", "BigBirdForQuestionAnswering", {}),
    "pegasus-qa": ("pegasus", "question_answering", "BigBirdPegasusForQuestionAnswering", {}),
    "mask": ("bigbird", "masked_lm", "BigBirdForMaskedLM", {}),
    "summarize": (
        "pegasus",
        "conditional_generation",
        "BigBirdPegasusForConditionalGeneration",
        {"max_length": 12, "num_beams": 2},
    ),
}


class Saved:
    """transformers 5 checkpoints by (name, with added tokens), made on first use: our tiny random model and
    trained spiece.model, loaded by transformers 5 and saved by its save_pretrained."""

    def __init__(self, root: Path) -> None:
        self.root, self.made = root, {}

    def __getitem__(self, key: tuple[str, bool]) -> Path:
        if key not in self.made:
            import transformers

            name, added = key
            family, head, reference, overrides = CHECKPOINTS[name]
            source = make_tiny_checkpoint(self.root / f"{name}-source", family, head, seed=3, **overrides)
            model = getattr(transformers, reference).from_pretrained(source)
            tokenizer = reference_tokenizer(name, source)
            if added:
                tokenizer.add_tokens(ADDED)
                model.resize_token_embeddings(len(tokenizer))
            out = self.root / f"{name}-{'added' if added else 'plain'}"
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            assert not (out / "spiece.model").exists() and (out / "tokenizer.json").exists()
            self.made[key] = out
        return self.made[key]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, one_thread) -> Saved:
    return Saved(tmp_path_factory.mktemp("transformers-5-checkpoints"))


def reference_model(name: str, folder: Path):
    import transformers

    model = getattr(transformers, CHECKPOINTS[name][2]).from_pretrained(folder)
    return model.eval()


def reference_tokenizer(name: str, folder: Path):
    """The reference's tokenizer of the checkpoint's family (its AutoTokenizer has none for bigbird_pegasus)."""
    from transformers import BigBirdTokenizer, PegasusTokenizer

    return (BigBirdTokenizer if CHECKPOINTS[name][0] == "bigbird" else PegasusTokenizer).from_pretrained(folder)


def doc(text: str, i: int = 0, **fields) -> Document:
    return Document(id=f"d{i}", text=text, source="test", fields=fields)


@pytest.mark.parametrize("added", [False, True], ids=["plain", "added-tokens"])
@pytest.mark.parametrize("name", ["classify", "pegasus-classify", "qa", "pegasus-qa", "mask", "summarize"])
def test_ids_equal_the_reference_tokenizer(name: str, added: bool, saved: Saved) -> None:
    """The task's tokens (piecewise, with offsets) are the reference's, on accents, CJK, emoji, newlines, runs of
    spaces and special and added tokens written in the text."""
    folder = saved[name, added]
    tasks = {"summarize": SummarizeTask, "mask": MaskTask, "qa": QATask, "pegasus-qa": QATask}
    task = tasks.get(name, ClassifyTask)(str(folder))
    assert task.tokenizer.source == "tokenizer.json"
    reference = reference_tokenizer(name, folder)
    for text in OFFSET_TEXTS + TEXTS + MASKED:
        assert task.encode(text).ids.tolist() == reference(text, add_special_tokens=False)["input_ids"], text
        assert task.wrap(task.encode(text).ids) == reference(text)["input_ids"], text
    if added:
        assert [task.tokenizer.convert_tokens_to_ids(t) for t in ADDED] == reference.convert_tokens_to_ids(ADDED)
        assert task.config.vocab_size == len(reference)


@pytest.mark.parametrize("added", [False, True], ids=["plain", "added-tokens"])
@pytest.mark.parametrize("name", ["classify", "pegasus-classify"])
def test_classify_equals_the_reference(name: str, added: bool, saved: Saved) -> None:
    """Label probabilities of single texts and of text pairs (`text_pair_field`)."""
    folder = saved[name, added]
    model, tokenizer = reference_model(name, folder), reference_tokenizer(name, folder)
    labels = model.config.id2label
    for pair in (False, True):
        task = ClassifyTask(str(folder), text_pair_field="hypothesis" if pair else None)
        docs = [doc(text, i, hypothesis=h) for i, (text, h) in enumerate(zip(TEXTS, HYPOTHESES, strict=True))]
        records = task(docs)
        for record, d in zip(records, docs, strict=True):
            inputs = tokenizer(d.text, d.fields["hypothesis"] if pair else None, return_tensors="pt")
            with torch.no_grad():
                probs = model(**inputs).logits.softmax(-1)[0]
            expected = {labels[i]: p for i, p in enumerate(probs.tolist())}
            assert record["chunks"] == 1 and set(record["scores"]) == set(expected)
            assert max(abs(record["scores"][k] - expected[k]) for k in expected) < 1e-5
            assert record["label"] == max(expected, key=expected.get)


@pytest.mark.parametrize("added", [False, True], ids=["plain", "added-tokens"])
def test_mask_equals_the_reference(added: bool, saved: Saved) -> None:
    """The top tokens and probabilities at every [MASK]."""
    folder = saved["mask", added]
    model, tokenizer = reference_model("mask", folder), reference_tokenizer("mask", folder)
    task = MaskTask(str(folder), top_k=3)
    for record, text in zip(task([doc(t, i) for i, t in enumerate(MASKED)]), MASKED, strict=True):
        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            probs = model(**inputs).logits.softmax(-1)[0]
        positions = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        assert len(record["predictions"]) == len(positions)
        for found, position in zip(record["predictions"], positions, strict=True):
            top = probs[position].topk(3)
            assert [p["token_id"] for p in found] == top.indices.tolist()
            assert max(abs(p["score"] - s) for p, s in zip(found, top.values.tolist(), strict=True)) < 1e-5
            assert [p["token"] for p in found] == [tokenizer.decode([i]).strip() for i in top.indices.tolist()]


@pytest.mark.parametrize("added", [False, True], ids=["plain", "added-tokens"])
@pytest.mark.parametrize("name", ["qa", "pegasus-qa"])
def test_qa_equals_the_reference(name: str, added: bool, saved: Saved) -> None:
    """The best span of the reference's logits over the context tokens (the span's probability: one softmax over
    [CLS], where the tokenizer opens the input with one (BigBird; Pegasus has none), and the context, start times
    end), cut from the text through the reference's offsets. Token-level spans (`align_to_words=False`): widening
    to whole words is the pipeline's step, tested against it in test_task_options.py."""
    folder = saved[name, added]
    model, tokenizer = reference_model(name, folder), reference_tokenizer(name, folder)
    task = QATask(str(folder), question=QUESTION, max_answer_tokens=8, align_to_words=False)
    for record, text in zip(task([doc(t, i) for i, t in enumerate(TEXTS)]), TEXTS, strict=True):
        inputs = tokenizer(QUESTION, text, return_tensors="pt", return_offsets_mapping=True)
        offsets = inputs.pop("offset_mapping")[0].tolist()
        context = [k for k, sequence in enumerate(inputs.sequence_ids(0)) if sequence == 1]
        first, last = context[0], context[-1] + 1  # [CLS] Q [SEP] context [SEP] (BigBird), Q context </s> (Pegasus)
        with torch.no_grad():
            out = model(**inputs)
        keep = torch.zeros_like(out.start_logits[0], dtype=torch.bool)
        keep[first:last] = True
        keep[0] |= tokenizer.cls_token_id is not None and inputs["input_ids"][0, 0] == tokenizer.cls_token_id
        p_start = out.start_logits[0].masked_fill(~keep, -torch.inf).softmax(-1)
        p_end = out.end_logits[0].masked_fill(~keep, -torch.inf).softmax(-1)
        spans = [(p_start[i] * p_end[j]).item() for i in range(first, last) for j in range(i, min(i + 8, last))]
        pairs = [(i, j) for i in range(first, last) for j in range(i, min(i + 8, last))]
        best = max(range(len(spans)), key=spans.__getitem__)
        i, j = pairs[best]
        answer = text[offsets[i][0] : offsets[j][1]].strip()
        assert record["answer"] == answer and abs(record["score"] - spans[best]) < 1e-5


@pytest.mark.parametrize("added", [False, True], ids=["plain", "added-tokens"])
def test_summarize_equals_the_reference(added: bool, saved: Saved) -> None:
    """Beam search with the checkpoint's settings, decoded without special tokens."""
    folder = saved["summarize", added]
    model, tokenizer = reference_model("summarize", folder), reference_tokenizer("summarize", folder)
    task = SummarizeTask(str(folder))
    for record, text in zip(task([doc(t, i) for i, t in enumerate(TEXTS)]), TEXTS, strict=True):
        with torch.no_grad():
            generated = model.generate(**tokenizer(text, return_tensors="pt"))
        assert record["summary"] == tokenizer.batch_decode(generated, skip_special_tokens=True)[0].strip()


# A tokenizer that doesn't belong -------------------------------------------------------------------------------


def mixed(saved: Saved, tmp_path: Path, model: str, tokenizer: str) -> Path:
    """`model`'s checkpoint with `tokenizer`'s tokenizer files in place of its own."""
    folder = tmp_path / f"{model}-with-{tokenizer}"
    tokenizer_files = ("tokenizer*", "special*", "spiece.model", "added_tokens.json")
    shutil.copytree(saved[model, False], folder, ignore=shutil.ignore_patterns(*tokenizer_files))
    for path in saved[tokenizer, False].iterdir():
        if path.name.startswith(("tokenizer", "special")):
            shutil.copy(path, folder)
    return folder


def test_mismatched_tokenizers_exit_2_before_the_first_document(saved: Saved, tmp_path: Path, bigbird) -> None:
    """BigBird's vocabulary in a Pegasus summarizer (special ids elsewhere), and a spiece.model beside a
    tokenizer.json of another layout: one sentence naming the files, exit 2, no record, no traceback."""
    wrong_special = mixed(saved, tmp_path, "summarize", "classify")
    pair = tmp_path / "pair"
    shutil.copytree(saved["summarize", False], pair)
    shutil.copy(saved.root / "summarize-source" / "spiece.model", pair)  # transformers 5 laid the ids out lower
    messages = {}
    for folder in (wrong_special, pair):
        result = bigbird("summarize", "--text", "The train leaves at noon.", "-m", folder)
        stderr = result.stderr.decode()
        assert result.returncode == 2 and result.stdout == b"" and "Traceback" not in stderr, stderr
        assert stderr.count("\n") == 1
        messages[folder.name] = stderr.strip()
    assert (
        "tokenizer (tokenizer.json) has </s> at id 2 and config.json declares eos_token_id 1"
        in messages[wrong_special.name]
    )
    ids = len(SummarizeTask(str(saved["summarize", False]), dry_run=True).tokenizer)  # spiece.model's count
    assert (
        f"its spiece.model and tokenizer.json give different ids ({ids} ids in spiece.model, {ids - 1} in "
        in (messages["pair"])
    )
    print(json.dumps(messages, indent=1))


def test_a_vocabulary_larger_than_the_embeddings_is_refused(saved: Saved, tmp_path: Path) -> None:
    folder = mixed(saved, tmp_path, "mask", "summarize")  # Pegasus's 103 reserved ids more than BigBird's
    from bigbird.models.tokenizers import BigBirdTokenizerFast

    pegasus = len(BigBirdTokenizerFast.from_pretrained(folder))  # with BigBird's role tokens it lacks added
    bigbird = MaskTask(str(saved["mask", False]), dry_run=True).config.vocab_size
    assert pegasus > bigbird
    expected = f"tokenizer (tokenizer.json) has {pegasus} tokens and the model's embeddings {bigbird}; the tokenizer"
    with pytest.raises(TaskError, match=re.escape(expected)):
        MaskTask(str(folder), dry_run=True)


def test_an_id_the_tokenizer_lacks_fails_its_document_alone(saved: Saved, tmp_path: Path, bigbird) -> None:
    """A smaller vocabulary with the same special ids can't be told in advance: the summarizer generates ids the
    tokenizer lacks, and each document gets an error record saying the vocabulary doesn't match the model."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "small-vocabulary"
    shutil.copytree(saved["summarize", False], folder)
    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    kept = 110  # the reserved ids and a few pieces
    tokenizer["model"]["vocab"] = tokenizer["model"]["vocab"][:kept]
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["id"] < kept]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert config["vocab_size"] > kept
    # The model favours the ids past the tokenizer's, as a model of a larger vocabulary does on its own text.
    weights = load_file(folder / "model.safetensors")
    weights["final_logits_bias"][:, kept:] += 50.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    jsonl_path = tmp_path / "docs.jsonl"
    jsonl_path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    result = bigbird("summarize", "--jsonl", jsonl_path, "-m", folder, "--min-new-tokens", "8")
    records = jsonl(result.stdout)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr, stderr
    assert [r["id"] for r in records] == ["d0", "d1"]
    assert all("the vocabulary doesn't match the model" in r["error"] for r in records), records
    print(records[0]["error"])


def test_dry_run_says_which_file_the_ids_come_from(saved: Saved, bigbird) -> None:
    folder = saved["classify", False]
    records = jsonl(bigbird("classify", "--text", "Plants grow.", "-m", folder, "--dry-run", check_rc=0).stdout)
    assert records[0]["tokenizer"] == "tokenizer.json"


@pytest.mark.parametrize("fast", [False, True])
def test_a_tokenizer_class_of_another_family_warns_that_it_reads_the_folder_its_own_way(tiny_models, caplog, fast):
    """BigBirdTokenizer on a Pegasus checkpoint loaded without a word and framed texts with [CLS]/[SEP] at ids the
    Pegasus vocabulary gives other pieces; its own family's class says nothing."""
    import bigbird

    pegasus, bigbird_folder = tiny_models["summarize"], tiny_models["mask"]
    suffix = "Fast" if fast else ""
    with caplog.at_level("WARNING", logger="bigbird.models.tokenizers.pieces"):
        getattr(bigbird, f"BigBirdTokenizer{suffix}").from_pretrained(pegasus)
        getattr(bigbird, f"PegasusTokenizer{suffix}").from_pretrained(pegasus)
        getattr(bigbird, f"BigBirdTokenizer{suffix}").from_pretrained(bigbird_folder)
    assert [r.getMessage() for r in caplog.records] == [
        f"{pegasus}: its tokenizer_config.json names PegasusTokenizer, read here as a BigBirdTokenizer."
    ]


def test_a_generic_tokenizer_class_name_warns_of_nothing(tiny_models, tmp_path, caplog):
    """A tokenizer.json-only checkpoint often names PreTrainedTokenizerFast: no family, nothing to warn of."""
    import bigbird

    folder = tmp_path / "generic"
    shutil.copytree(tiny_models["mask"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    with caplog.at_level("WARNING", logger="bigbird.models.tokenizers.pieces"):
        bigbird.BigBirdTokenizerFast.from_pretrained(folder)
    assert caplog.records == []
