"""Tasks through the Python API: chunking strategies, windows, offsets, and loading errors."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import torch
from conftest import BAKER, LONG_TEXT, WINDOW, cli, jsonl

from bigbird.models import generation
from bigbird.tasks import ClassifyTask, MaskTask, QATask, SummarizeTask, TaskError, summarize
from bigbird.tasks import base as task_base
from bigbird.tasks.base import sliding_windows, split_even
from bigbird.tasks.documents import Document
from bigbird_cli.engines.local import local_engine


def doc(text: str, id: str = "d", **fields) -> Document:
    return Document(id, "test", text, fields=fields)


@pytest.mark.parametrize("n, capacity", [(1, 5), (5, 5), (6, 5), (100, 7), (1000, 254)])
def test_split_even_covers_evenly(n, capacity):
    windows = split_even(n, capacity)
    assert windows[0][0] == 0 and windows[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    sizes = [e - s for s, e in windows]
    assert max(sizes) <= capacity and max(sizes) - min(sizes) <= 1 and len(windows) == -(-n // capacity)


@pytest.mark.parametrize("n, capacity, overlap", [(3, 5, 1), (10, 5, 1), (100, 30, 7), (31, 30, 7)])
def test_sliding_windows_overlap_and_cover(n, capacity, overlap):
    windows = sliding_windows(n, capacity, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == n
    assert all(e - s == min(n, capacity) for s, e in windows[:-1]) and 0 < windows[-1][1] - windows[-1][0] <= capacity
    assert all(b[0] == a[1] - overlap for a, b in zip(windows, windows[1:], strict=False))
    assert windows[-1][0] + capacity >= n and (len(windows) == 1 or windows[-2][0] + capacity < n)


@pytest.fixture(scope="module")
def classify(tiny_models):
    return ClassifyTask(str(tiny_models["classify"]))


def test_classify_averages_chunk_probabilities(classify):
    [record] = classify([doc(LONG_TEXT)])
    ids = classify.encode(LONG_TEXT).ids.tolist()
    windows = split_even(len(ids), WINDOW - 2)
    assert record["chunks"] == len(windows) > 1 and record["input_tokens"] == len(ids) and not record["truncated"]
    probs = classify.scores([classify.wrap(ids[s:e]) for s, e in windows], len(windows)).mean(0)
    assert record["scores"] == pytest.approx(dict(zip(classify.labels, probs.tolist(), strict=True)), abs=1e-6)
    assert record["label"] == max(record["scores"], key=record["scores"].get)
    assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_classify_batched_equals_one_by_one(classify):
    docs = [doc("Short text.", "a"), doc(LONG_TEXT, "b"), doc("A medium length sentence about rivers.", "c")]
    together = classify(docs)
    for got, one in zip(together, [classify([d])[0] for d in docs], strict=True):
        assert got["scores"] == pytest.approx(one["scores"], abs=1e-5)


def test_a_record_does_not_depend_on_its_batch_mates(classify):
    """Padded to a batch-mate's width, a short input would switch to block-sparse attention, and a block-sparse one
    would get another random-block plan: a forward pass holds only inputs that run as they would alone."""
    words = LONG_TEXT.split()

    def of_tokens(n):  # the shortest prefix of LONG_TEXT that frames to at least n tokens
        k = next(k for k in range(1, len(words)) if len(classify.encode(" ".join(words[:k])).ids) + 2 >= n)
        return " ".join(words[:k])

    docs = [doc(of_tokens(n), str(n)) for n in (100, 200, 240)]
    alone = [classify([d], 1)[0] for d in docs]
    assert [r["attention"] for r in alone] == ["original_full", "block_sparse", "block_sparse"]
    for got, one in zip(classify(docs, 8), alone, strict=True):
        assert got["attention"] == one["attention"] and got["scores"] == pytest.approx(one["scores"], abs=1e-6)
    # Block-sparse inputs share a pass only at the same width in blocks (16 tokens here); full ones at any width.
    passes = list(classify.batches([[5] * n for n in (60, 100, 200, 205, 230, 240)], 8))
    assert [batch.indices for batch in passes] == [[0, 1], [2, 3], [4, 5]]
    # Each pass carries the attention it runs, as the documents alone ran it.
    assert [batch.attention for batch in passes] == ["original_full", "block_sparse", "block_sparse"]


def test_classify_truncate_and_top_k(tiny_models):
    task = ClassifyTask(str(tiny_models["classify"]), strategy="truncate", top_k=2)
    [record] = task([doc(LONG_TEXT)])
    assert record["chunks"] == 1 and record["truncated"] and len(record["scores"]) == 2
    assert list(record["scores"])[0] == record["label"]


def test_qa_slides_windows_and_offsets_point_into_the_document(tiny_models):
    task = QATask(str(tiny_models["qa"]), top_k=3)
    text = LONG_TEXT + " The answer is forty two."
    records = task([doc(text, "long", question="What is the answer?"), doc("The oven is lit at four.", "short")])
    long, short = records
    assert long["chunks"] > 1 and not long["truncated"]
    assert len(long["answers"]) == 3 and len({(a["start"], a["end"]) for a in long["answers"]}) == 3
    assert [a["score"] for a in long["answers"]] == sorted((a["score"] for a in long["answers"]), reverse=True)
    for answer in long["answers"]:
        assert text[answer["start"] : answer["end"]] == answer["answer"]
    assert "no question" in short["error"] and "answer" not in short
    truncated = QATask(str(tiny_models["qa"]), strategy="truncate", question="What?")([doc(text)])[0]
    assert truncated["chunks"] == 1 and truncated["truncated"]


def test_mask_predicts_each_mask_from_a_window_centred_on_it(tiny_models):
    task = MaskTask(str(tiny_models["mask"]), top_k=2)
    text = "The [MASK] of rivers. " + LONG_TEXT + " Snow fell on the [MASK] above the [MASK]."
    [record] = task([doc(text)])
    enc = task.encode(text)
    masks = [k for k, t in enumerate(enc.ids) if t == task.mask_id]
    capacity = WINDOW - 2
    starts = [min(max(0, k - capacity // 2), len(enc.ids) - capacity) for k in masks]
    # The last two masks sit within half a window of the end: they share the window that ends there.
    assert len(record["predictions"]) == 3 and record["chunks"] == len(set(starts)) == 2 and not record["truncated"]
    for k, start, predictions in zip(masks, starts, record["predictions"], strict=True):
        with torch.inference_mode():
            logits = task.model(torch.tensor([task.wrap(enc.ids[start : start + capacity])])).logits[0]
        probs = logits[k - start + 1].softmax(-1)
        top = probs.topk(2)
        assert [p["token_id"] for p in predictions] == top.indices.tolist()
        assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-5)
        a, b = enc.offsets[k]
        for p in predictions:
            assert p["sequence"] == text[:a] + p["token"] + text[b:]
    cut = MaskTask(str(tiny_models["mask"]), strategy="truncate")([doc(text)])[0]
    assert cut["truncated"] and len(cut["predictions"]) == 1


def test_summarize_chunks_then_summarizes_the_summaries(tiny_models, monkeypatch):
    task = SummarizeTask(str(tiny_models["summarize"]), max_new_tokens=5, num_beams=1)
    assert task.generate_options == {"num_beams": 1, "max_new_tokens": 5}
    assert task.generation.num_beams == 1 and task.generation.length_penalty == 0.8 and task.generation.max_length == 6
    given = []  # the width of every input generate_each is handed, in order
    original = summarize.generate_each

    def counting(model, inputs, size, **options):
        def seen():
            for item in inputs:
                if item is not None:  # None: nothing ready until an input in flight is done
                    given.append(item[0].shape[1])
                yield item

        return original(model, seen(), size, **options)

    monkeypatch.setattr(summarize, "generate_each", counting)
    short, long = task([doc("The committee met on Tuesday.", "s"), doc(LONG_TEXT * 2, "l")])
    assert short["chunks"] == 1 and long["chunks"] == len(split_even(long["input_tokens"], WINDOW - 1)) > 1
    # The short document, then the long one's chunks; once their summaries are all in, the joined summaries.
    assert len(given) == 1 + long["chunks"] + 1
    assert isinstance(long["summary"], str) and not long["truncated"]
    [cut] = SummarizeTask(str(tiny_models["summarize"]), strategy="truncate", max_new_tokens=3)([doc(LONG_TEXT)])
    assert cut["truncated"] and cut["chunks"] == 1


def test_defaults_come_from_the_checkpoint(tiny_models):
    task = SummarizeTask(str(tiny_models["summarize"]))
    assert task.generate_options == {}
    assert task.generation.num_beams == 2 and task.generation.max_length == 12


def test_loading_errors_are_one_sentence(tiny_models, tmp_path):
    with pytest.raises(TaskError, match="needs a BigBirdPegasus checkpoint"):
        SummarizeTask(str(tiny_models["mask"]))
    with pytest.raises(TaskError, match="needs a BigBird checkpoint"):
        MaskTask(str(tiny_models["summarize"]))
    with pytest.raises(TaskError, match="config.json"):
        MaskTask(str(tmp_path))
    with pytest.raises(TaskError):
        MaskTask(str(tmp_path / "missing" / "deeper" / "dir"))


def test_a_checkpoint_saved_by_transformers_5_reads_its_tokenizer_json(tiny_models, tmp_path):
    """transformers 5 saves a BigBird tokenizer as tokenizer.json alone; it was refused for want of spiece.model.
    (tests/test_fast_tokenizers.py and tests/test_tokenizer_checkpoints.py hold its ids and records to the
    reference.)"""
    from transformers import AutoTokenizer

    source = tiny_models["classify"]
    shutil.copytree(
        source, tmp_path / "fine-tuned", ignore=shutil.ignore_patterns("spiece.model", "tokenizer*", "special*")
    )
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "fine-tuned")
    assert not (tmp_path / "fine-tuned" / "spiece.model").exists()
    task = ClassifyTask(str(tmp_path / "fine-tuned"))
    assert task.tokenizer.source == "tokenizer.json"
    assert task([doc("Plants grow.")])[0]["label"]


def test_a_tokenizer_of_another_model_is_refused_at_load(tiny_models, tmp_path):
    """Its ids past the embeddings would fail every document with an IndexError."""
    from bigbird.tools.tiny import make_tiny_checkpoint

    mixed = make_tiny_checkpoint(tmp_path / "mixed", "bigbird", "sequence_classification", vocab_size=200)
    shutil.copy(tiny_models["classify"] / "spiece.model", mixed)  # a larger vocabulary
    with pytest.raises(TaskError, match="tokenizer files belong to another model"):
        ClassifyTask(str(mixed))


@pytest.mark.parametrize("call", ["stream", "call"])
def test_summaries_finished_together_each_report_their_own_seconds(tiny_models, call):
    """Documents decoded together and finishing in the same step: each record's `seconds` holds at least its own
    encoding (the time since the record before gave all but the first nothing), batched in one call or streamed,
    and a call's records never add up to more than it took. The long document's rounds are all its own (a
    batch's time shared equally gave every record the same seconds)."""
    task = SummarizeTask(str(tiny_models["summarize"]), num_beams=1, max_new_tokens=4, min_new_tokens=4)
    encoder = task.model.model.encoder
    encoding: list[float] = []
    original = encoder.forward

    def timed(input_ids, *args, **kwargs):
        started = time.perf_counter()
        out = original(input_ids, *args, **kwargs)
        encoding.append(time.perf_counter() - started)
        return out

    encoder.forward = timed
    docs = [doc("The committee met on Tuesday.", "a"), doc("Rain fell all week.", "b"), doc(LONG_TEXT * 2, "c")]
    started = time.perf_counter()
    records = [r for _, r in task.stream(docs, 8)] if call == "stream" else task(docs, 8)
    took = time.perf_counter() - started
    records = {r["id"]: r for r in records}
    assert records["c"]["chunks"] > 1 and len(encoding) > len(docs)  # c's chunks, then their joined summaries
    assert records["a"]["seconds"] > encoding[0] and records["b"]["seconds"] > encoding[1]
    assert records["c"]["seconds"] > sum(encoding[2:]) and records["c"]["seconds"] != records["a"]["seconds"]
    assert sum(r["seconds"] for r in records.values()) <= took


def test_summaries_no_shorter_than_their_chunks_are_cut_at_one_whole_window(tiny_models, monkeypatch):
    """A model that never stops early: the round cuts the joined summaries so the loop ends. It kept the first of
    several near-equal windows (not a whole one) and still said the text was not cut."""
    task = SummarizeTask(str(tiny_models["summarize"]), num_beams=1)
    seen = []

    def echo(model, inputs, size, **options):  # each summary is its input again: as long as it
        for n, (input_ids, _) in enumerate(inputs):
            seen.append(input_ids.shape[1] - task.num_special)
            yield n, input_ids, 0.0

    monkeypatch.setattr(summarize, "generate_each", echo)
    [record] = task([doc(LONG_TEXT * 3)])
    assert record["chunks"] > 2 and record["truncated"]
    assert seen[-1] == task.capacity  # the last round read one whole window


def test_a_question_that_is_a_list_or_an_object_is_an_error_record(tiny_models):
    """Its Python repr ("['x']") was asked instead."""
    task = QATask(str(tiny_models["qa"]))
    records = task([doc("Paris is big.", "a", question=["Which city?"]), doc("Paris is big.", "b", question=7)])
    assert records[0]["error"] == "the 'question' field is a list, not a question."
    assert "error" not in records[1]  # a number is text enough


def test_labels_of_the_same_name_keep_their_own_scores(tiny_models, tmp_path):
    """id2label {0: pos, 1: pos}: `scores` lost one of them, and `score` was no longer `scores[label]`."""
    checkpoint = tmp_path / "same-names"
    shutil.copytree(tiny_models["classify"], checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    names = {str(i): name for i, name in enumerate(["pos", "neg", "pos"][: len(config["id2label"])])}
    (checkpoint / "config.json").write_text(json.dumps({**config, "id2label": names, "label2id": {}}))
    task = ClassifyTask(str(checkpoint))
    assert task.labels == ["pos (0)", "neg", "pos (2)"]
    assert task.warnings == ["the checkpoint gives labels the same name; they go by pos (0), pos (2)."]
    [record] = task([doc("Plants grow.")])
    assert len(record["scores"]) == 3 and record["score"] == record["scores"][record["label"]]


@pytest.mark.parametrize("task_name", ["classify", "qa", "mask", "summarize"])
def test_a_checkpoint_asking_for_every_output_gives_the_same_records(task_name, tiny_models, tmp_path):
    """config.json may ask forward calls for tuples and every layer's states (the fields are honoured now): a task
    reads its outputs by name, so its records are those of the plain checkpoint, not a failure per document."""
    make = {"classify": ClassifyTask, "qa": QATask, "mask": MaskTask, "summarize": SummarizeTask}[task_name]
    options = {"max_new_tokens": 4} if task_name == "summarize" else {}
    text = "The museum opened a new wing. [MASK] paintings hang there." if task_name == "mask" else LONG_TEXT
    document = doc(text, question="What opened?")
    checkpoint = tmp_path / "every-output"
    shutil.copytree(tiny_models[task_name], checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    asks = {"return_dict": False, "output_hidden_states": True, "output_attentions": True}
    (checkpoint / "config.json").write_text(json.dumps({**config, **asks}))
    [expected] = make(str(tiny_models[task_name]), **options)([document])
    [record] = make(str(checkpoint), **options)([document])
    assert "error" not in record
    assert same_result(record, expected)


def same_result(a: dict, b: dict) -> bool:
    """Two records of one document agree on everything but the model's path and the time taken."""
    return {k: v for k, v in a.items() if k not in ("model", "seconds")} == {
        k: v for k, v in b.items() if k not in ("model", "seconds")
    }


@pytest.mark.parametrize(
    "options",
    [{"num_beams": 3, "max_new_tokens": 6}, {"do_sample": True, "seed": 5, "num_beams": 2, "max_new_tokens": 6}],
    ids=["beams", "beam-sampling-seeded"],
)
def test_summaries_of_mixed_lengths_do_not_depend_on_the_batch_size(tiny_models, options):
    """Short documents and a chunked long one, decoded together at --batch-size 4 (continuous batching), get the
    records of --batch-size 1."""
    task = SummarizeTask(str(tiny_models["summarize"]), **options)
    docs = [
        doc("The committee met on Tuesday.", "a"),
        doc(LONG_TEXT * 2, "b"),
        doc("Rivers carry sediment to the sea, where it settles and slowly builds wide, flat deltas.", "c"),
        doc(LONG_TEXT, "d"),
    ]

    def summaries(size: int) -> list:
        return [(r["summary"], r["attention"], r["chunks"]) for r in task(docs, size)]

    alone = summaries(1)
    assert summaries(4) == alone and summaries(3) == alone


@pytest.mark.parametrize("command", ["classify", "summarize", "mask"])
def test_a_document_with_no_tokens_is_an_error_record(offline_hub, tiny_models, tmp_path, command):
    out = tmp_path / "out.jsonl"
    text = "\u200b\u200b\x01\x02"
    result = cli(command, "-m", tiny_models[command], "--text", text, "-o", out, "-q")
    assert result.exit_code == 1, result.output
    [record] = jsonl(out)
    assert "no tokens" in record["error"]


def test_tokenizing_in_pieces_matches_the_whole_text_and_truncate_stops_early(offline_hub, tiny_models, monkeypatch):
    task = ClassifyTask(str(tiny_models["classify"]))
    whole = task.tokenizer(LONG_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    monkeypatch.setattr(task_base, "PIECE_CHARS", 300)
    pieces = task.encode(LONG_TEXT)
    assert pieces.ids.tolist() == list(whole["input_ids"]) and pieces.complete
    assert pieces.offsets.tolist() == [list(span) for span in whole["offset_mapping"]]
    task.strategy = "truncate"
    cut = task.encode(LONG_TEXT * 50, capacity=40)
    assert not cut.complete and 40 < len(cut.ids) < len(whole["input_ids"])
    assert cut.ids[:40].tolist() == list(whole["input_ids"])[:40]


def test_windows_go_through_the_model_at_most_size_at_a_time(offline_hub, tiny_models):
    task = ClassifyTask(str(tiny_models["classify"]))
    sequences = [[5] * n for n in (3, 9, 4, 7, 2)]
    batches = list(task.batches(iter(sequences), 2))
    assert [batch.indices for batch in batches] == [[0, 1], [2, 3], [4]]  # in order: sorting is the runner's job
    assert [tuple(batch.input_ids.shape) for batch in batches] == [(2, 9), (2, 7), (1, 2)]
    assert "batch_size" not in ClassifyTask.__init__.__code__.co_varnames + task_base.Task.__init__.__code__.co_varnames


@pytest.mark.parametrize("batch_size", [1, 3])
def test_one_long_documents_chunks_go_through_the_model_batch_size_at_a_time(
    offline_hub, tiny_models, monkeypatch, batch_size
):
    """The runner hands --batch-size down to the task: a single chunked document's windows share forward passes up
    to that size (not one window a pass), and its record is the same as unbatched up to padding noise."""
    task = ClassifyTask(str(tiny_models["classify"]))
    [alone] = task([Document("l", "test", LONG_TEXT * 4)], 1)
    rows: list[int] = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda ids, **kw: rows.append(len(ids)) or forward(ids, **kw))
    [record] = list(local_engine(task, batch_size)(iter([Document("l", "test", LONG_TEXT * 4)])))
    n = record["chunks"]
    assert n > 3 and rows == [min(batch_size, n - k) for k in range(0, n, batch_size)]
    assert record["label"] == alone["label"] and record["chunks"] == alone["chunks"]
    assert record["scores"] == pytest.approx(alone["scores"], abs=1e-4)


def test_a_checkpoint_of_another_head_or_too_big_says_so(bigbird, tiny_models, tmp_path):
    """classify on a QA checkpoint named a missing pooler weight; a config too big for memory ended with torch's
    allocator text. Now: the checkpoint's architecture and the command that runs it; the memory the config needs
    and the memory the machine has."""
    wrong = bigbird("classify", "--text", BAKER, "-m", tiny_models["qa"], check_rc=2).stderr.decode()
    assert wrong == (
        f"error: {tiny_models['qa']} is a BigBirdForQuestionAnswering checkpoint, which `bigbird qa` runs;"
        " classify needs a BigBirdForSequenceClassification checkpoint.\n"
    )
    huge = tmp_path / "huge"
    huge.mkdir()
    for name in ("config.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_models["qa"] / name).exists():
            (huge / name).write_bytes((tiny_models["qa"] / name).read_bytes())
    config = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**config, "hidden_size": 10**9}))
    (huge / "model.safetensors").write_bytes((tiny_models["qa"] / "model.safetensors").read_bytes())
    said = bigbird("qa", "--text", BAKER, "-Q", "Who?", "-m", huge, check_rc=2).stderr.decode()
    assert "its config needs" in said and "GiB available." in said and "Allocator" not in said


@pytest.mark.parametrize("kind", ["mask", "summarize"])
def test_a_document_that_could_not_be_read_is_its_error_record_from_python_too(tiny_models, kind):
    """Document.error was honoured by the CLI's engine only: a Task called from Python ran the document anyway
    (mask gave predictions; summarize said it had no tokens)."""
    task = MaskTask(str(tiny_models["mask"])) if kind == "mask" else SummarizeTask(str(tiny_models["summarize"]))
    text = "Plants make [MASK] from light." if kind == "mask" else "The committee met on Tuesday."
    docs = [doc(text, "good"), Document("bad", "x", text, error="it could not be read.")]
    for records in (task(docs), [record for _, record in sorted(task.stream(docs))]):
        assert "error" not in records[0] and records[1]["error"] == "it could not be read."


def test_a_task_given_something_else_than_a_list_of_documents_says_so(tiny_models):
    task = MaskTask(str(tiny_models["mask"]))
    one = doc("Plants make [MASK].", "d")
    for wrong, said in (
        (one, "not one Document: call task([document])"),
        ("Plants make [MASK].", "not str"),
        (["Plants make [MASK]."], "not of str"),
    ):
        with pytest.raises(TypeError, match=re.escape(said)):
            task(wrong)
    assert task(d for d in [one])[0]["id"] == "d"  # any iterable of Documents


@pytest.mark.parametrize(("inputs_that_fit", "expected"), [(100, 8), (3, 3), (0, 1)])
def test_summarize_decodes_as_many_documents_together_as_memory_holds_by_default(
    tiny_models, monkeypatch, inputs_that_fit, expected
):
    """With no batch size named, summarize on the CPU decodes as many inputs together as its share of the available
    memory holds at their largest, from 1 to 8 (its records are the same at any batch size)."""
    task = SummarizeTask(str(tiny_models["summarize"]))
    share = inputs_that_fit * task.memory_per_input() / summarize.MEMORY_SHARE_BY_DEFAULT
    monkeypatch.setattr(summarize, "available_memory", lambda: int(share))
    assert task.default_batch_size() == expected


def test_other_tasks_dry_runs_and_unknown_memory_take_one_document_at_a_time_by_default(tiny_models, monkeypatch):
    assert ClassifyTask(str(tiny_models["classify"])).default_batch_size() == 1
    assert SummarizeTask(str(tiny_models["summarize"]), dry_run=True).default_batch_size() == 1
    monkeypatch.setattr(summarize, "available_memory", lambda: None)  # a system that can't tell
    assert SummarizeTask(str(tiny_models["summarize"])).default_batch_size() == 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_memory_one_input_holds_is_what_summarize_counts_for_it(tiny_models, monkeypatch, dtype):
    """memory_per_input is what one input in flight really holds at a full window and the longest summary: its
    encoder states, cross-attention keys/values and rows' self-attention cache, as generate_each keeps them
    (torch's attention forced, so that the keys/values stay plain tensors whose bytes can be counted)."""
    monkeypatch.setenv("BIGBIRD_CROSS_ATTENTION", "sdpa")
    task = SummarizeTask(
        str(tiny_models["summarize"]), strategy="truncate", min_new_tokens=11, max_new_tokens=11, dtype=dtype
    )
    caches: list = []
    kept = generation.DecoderCache.__init__

    def keeping(self, *args, **kwargs):
        kept(self, *args, **kwargs)
        caches.append(self)

    monkeypatch.setattr(generation.DecoderCache, "__init__", keeping)
    encoded: list[int] = []
    hook = task.model.model.encoder.register_forward_hook(
        lambda module, args, out: encoded.append(out.last_hidden_state.nbytes)
    )
    try:
        [record] = task([doc(LONG_TEXT * 2)])
    finally:
        hook.remove()
    assert record["input_tokens"] >= task.max_tokens and record["truncated"]
    [cache] = caches
    cross = sum(kv.keys.nbytes + kv.values.nbytes for kv in cache.cross)
    own = sum(t.nbytes for t in (*cache.keys, *cache.values))
    width = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    assert encoded == [task.max_tokens * task.config.d_model * width]
    assert all(t.dtype == torch.float32 for t in cache.keys)  # the self-attention cache is held wide
    assert task.memory_per_input() == encoded[0] + cross + own


def test_summarize_without_a_batch_size_runs_the_tasks_default_and_gets_the_records_of_one_at_a_time(
    offline_hub, tiny_models, tmp_path, monkeypatch
):
    folder = tmp_path / "papers"
    folder.mkdir()
    for name, text in {"a.txt": BAKER, "b.txt": LONG_TEXT, "c.txt": "The committee met on Tuesday."}.items():
        (folder / name).write_text(text)
    monkeypatch.setattr(summarize, "available_memory", lambda: 2**50)  # room for the most
    given = []  # the batch size each stream was handed: the default run's one bucket, then each document alone
    streaming = SummarizeTask.stream

    def recording(self, docs, per_pass=None):
        given.append(per_pass)
        return streaming(self, docs, per_pass)

    monkeypatch.setattr(SummarizeTask, "stream", recording)
    outputs = [tmp_path / "default.jsonl", tmp_path / "one.jsonl"]
    for out, size in zip(outputs, ([], ["--batch-size", "1"]), strict=True):
        result = cli("summarize", folder, "-m", tiny_models["summarize"], "-o", out, "-q", *size)
        assert result.exit_code == 0, result.output
    assert given == [summarize.MOST_BY_DEFAULT, 1, 1, 1]
    default, one_at_a_time = (jsonl(out) for out in outputs)
    assert len(default) == 3 and all(map(same_result, default, one_at_a_time))
