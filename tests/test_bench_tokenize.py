"""`bigbird bench --task tokenize`: a checkpoint's spiece.model and tokenizer.json timed on one text file, as the
tasks tokenize a document, through bigbird.tools.bench and the CLI; and the options it refuses.

No timing is asserted (it depends on the machine): the records' fields, which file serves, and whether the files
gave the same ids and spans as the tasks' own tokenizing of the same text.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import LONG_TEXT, cli, jsonl, one_sentence

from bigbird.tasks import MaskTask
from bigbird.tasks.base import PIECE_CHARS
from bigbird.tools.bench import BenchError, BenchSpec, run_bench

# Longer than two of the tasks' pieces, so the pieces are joined as a long document's are.
TEXT = " ".join([LONG_TEXT] * (2 * PIECE_CHARS // len(LONG_TEXT) + 2))
# Where a tokenizer.json written by transformers 5 (without the spiece.model's normalizer) and the spiece.model it
# came from give different ids: line breaks, which the normalizer turns into spaces, and "ﬁ" or full-width text.
UNNORMALIZED = ["The town.\n\nRivers carry sediment.", "naïve ﬁnance ①② ＡＢＣ end"]


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny_models, one_thread) -> Path:
    """The tiny masked-LM checkpoint (its spiece.model trained in the test run) with the tokenizer.json that
    transformers 5.23's `save_pretrained` writes from it beside the spiece.model."""
    import transformers

    root = tmp_path_factory.mktemp("tokenize-bench")
    folder = Path(shutil.copytree(tiny_models["mask"], root / "both"))
    transformers.BigBirdTokenizer.from_pretrained(folder).save_pretrained(root / "saved")
    assert not (root / "saved" / "spiece.model").exists()
    shutil.copy(root / "saved" / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenize-text") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tokenize(model: Path, text: Path, **options) -> list[dict]:
    return list(run_bench(BenchSpec(preset=None, model=str(model), task="tokenize", text=str(text), **options)))


def test_both_files_are_timed_and_give_the_tasks_tokens(both: Path, text_file: Path) -> None:
    cores = os.sched_getaffinity(0)
    records = tokenize(both, text_file, repeat=2, warmup=1, threads=1)
    assert os.sched_getaffinity(0) == cores  # --threads pins the cores for the measurement only
    assert [(r["tokenizer_file"], r["serves"]) for r in records] == [("spiece.model", True), ("tokenizer.json", False)]
    assert [r["tokenizer_class"] for r in records] == ["BigBirdTokenizer", "BigBirdTokenizerFast"]
    served = MaskTask(str(both), dry_run=True).encode(TEXT)  # what the tasks read from this folder
    for r in records:
        assert r["task"] == "tokenize" and r["same_ids"] is True and r["threads"] == 1
        assert r["tokens"] == len(served.ids) and r["characters"] == len(TEXT) and r["pieces"] >= 3
        assert r["megabytes"] == round(len(TEXT.encode()) / 1e6, 6)
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"] and r["s_per_mb"] > 0
        assert (r["repeat"], r["warmup"]) == (2, 1)
        assert set(r["versions"]) == {"sentencepiece", "tokenizers"}
        assert r["machine"]["cpu_count"] == os.cpu_count() and "load_avg_1m" in r["machine"]


def test_same_ids_is_false_where_the_files_disagree(both: Path, tmp_path: Path) -> None:
    """transformers 5 writes a tokenizer.json without the spiece.model's normalizer: line breaks, "ﬁ" and
    full-width text tokenize differently, and the serving spiece.model's ids are not the tokenizer.json's."""
    for k, unnormalized in enumerate(UNNORMALIZED):
        text = tmp_path / f"unnormalized-{k}.txt"
        text.write_text(unnormalized, encoding="utf-8")
        records = tokenize(both, text, repeat=1, warmup=0)
        assert [r["same_ids"] for r in records] == [False, False], unnormalized


def test_a_tokenizer_json_alone_serves(both: Path, text_file: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(both, tmp_path / "json-only"))
    (folder / "spiece.model").unlink()
    (record,) = tokenize(folder, text_file, repeat=1, warmup=0)
    assert record["tokenizer_file"] == "tokenizer.json" and record["serves"] and record["same_ids"]
    assert record["tokens"] == len(MaskTask(str(folder), dry_run=True).encode(TEXT).ids)


def test_a_tokenizer_saved_without_a_model_is_read_by_its_class(both: Path, text_file: Path, tmp_path: Path) -> None:
    """No config.json (a tokenizer saved alone): tokenizer_config.json's class names the family."""
    folder = Path(shutil.copytree(both, tmp_path / "tokenizer-only"))
    (folder / "config.json").unlink()
    (folder / "model.safetensors").unlink()
    records = tokenize(folder, text_file, repeat=1, warmup=0)
    assert [r["tokenizer_class"] for r in records] == ["BigBirdTokenizer", "BigBirdTokenizerFast"]


def test_through_the_cli(bigbird, both: Path, text_file: Path) -> None:
    """JSONL on stdout, one record per file; the table on stderr."""
    done = bigbird("bench", "--task", "tokenize", "--model", both, "--text", text_file, "--repeat", "1")
    assert done.returncode == 0, done.stderr.decode()
    records = jsonl(done.stdout)
    assert [(r["tokenizer_file"], r["serves"], r["same_ids"]) for r in records] == [
        ("spiece.model", True, True),
        ("tokenizer.json", False, True),
    ]
    table = done.stderr.decode()
    assert "tokenizer.json" in table and "s/MB" in table and "BigBirdTokenizerFast" in table


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"preset": "tiny", "model": None}, "a preset has none"),
        ({"text": None}, "needs --text FILE"),
        ({"seq_lens": [64]}, "--seq-lens does not apply to --task tokenize"),
        ({"compare": "transformers", "quantize": "int8"}, "--compare, --quantize do not apply"),
        ({"task": "encode"}, "--text is the text --task tokenize tokenizes"),
        ({"text": "/nonexistent/text.txt"}, "--text /nonexistent/text.txt: the file does not exist"),
        ({"model": "/nonexistent/folder"}, "/nonexistent/folder"),
    ],
)
def test_refusals(options: dict, says: str, both: Path, text_file: Path) -> None:
    spec = {"preset": None, "model": str(both), "task": "tokenize", "text": str(text_file), "repeat": 1, **options}
    with pytest.raises(BenchError, match=says) as refused:
        list(run_bench(BenchSpec(**spec)))
    assert str(refused.value).endswith(".")


def test_a_folder_without_a_tokenizer_is_refused(both: Path, text_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights-only"
    folder.mkdir()
    shutil.copy(both / "config.json", folder / "config.json")
    with pytest.raises(BenchError, match="neither a spiece.model nor a tokenizer.json"):
        tokenize(folder, text_file, repeat=1, warmup=0)


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no --model: bench's default preset, which has no tokenizer
        ["--model", "MODEL"],  # no --text
        ["--model", "MODEL", "--text", "TEXT", "--batch-sizes", "2"],
        ["--model", "MODEL", "--text", "TEXT", "--plot", "out.png"],
    ],
)
def test_cli_refusals_are_one_sentence_exit_2(extra: list[str], both: Path, text_file: Path) -> None:
    args = [{"MODEL": str(both), "TEXT": str(text_file)}.get(arg, arg) for arg in extra]
    result = cli("bench", "--task", "tokenize", *args)
    assert result.exit_code == 2 and one_sentence(result.output), result.output


def test_a_bad_text_or_folder_is_refused_before_the_output_is_opened(both: Path, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    result = cli("bench", "--task", "tokenize", "--model", both, "--text", tmp_path / "missing.txt", "-o", out)
    assert result.exit_code == 2 and one_sentence(result.output) and "does not exist" in result.output
    assert not out.exists()
    foreign = Path(shutil.copytree(both, tmp_path / "foreign"))
    (foreign / "config.json").write_text('{"model_type": "t5"}', encoding="utf-8")
    text = tmp_path / "text.txt"
    text.write_text("Rivers carry sediment.", encoding="utf-8")
    result = cli("bench", "--task", "tokenize", "--model", foreign, "--text", text, "-o", out)
    assert result.exit_code == 2 and one_sentence(result.output) and "BigBird or Pegasus" in result.output
    assert not out.exists()
