"""`bigbird finetune`: labels from the data, bad options and bad records, a kill -9 or SIGTERM + --resume that ends
bit-equal to an unbroken run, and OUT_DIR loaded by the task commands and by transformers 5.23 with equal outputs.

Runs are tiny (a 2-layer, 32-wide model, a few steps), one thread, so they take seconds.
"""

from __future__ import annotations

import json
import random
import signal

import pytest
import torch
from conftest import jsonl, stopped_run
from safetensors.torch import load_file

from bigbird.tools.tiny import CORPUS, make_tiny_checkpoint

STEPS = ("--max-steps", "8", "--save-steps", "2", "--eval-steps", "3", "--batch-size", "4", "--threads", "1")


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Classify, qa and summarize records over the tiny corpus (a few sentences each), with a few bad ones."""
    root = tmp_path_factory.mktemp("finetune-data")
    rng = random.Random(0)
    rows, qa_rows, sum_rows = [], [], []
    for i in range(24):
        sentences = rng.sample(CORPUS, 4)
        label = ["weather", "food", "law"][i % 3]
        rows.append({"id": f"d{i}", "text": " ".join(sentences), "label": label})
        answer = sentences[2].split()[1]
        qa_rows.append(
            {
                "id": f"q{i}",
                "text": " ".join(sentences),
                "question": "Which word comes second?",
                "answers": {"text": [answer]} if i % 4 else {"text": []},
            }
        )
        sum_rows.append({"id": f"s{i}", "text": " ".join(sentences), "summary": sentences[0]})
    bad = [
        {"id": "nolabel", "text": "The committee met."},
        {"id": "other", "text": "Rivers carry sediment.", "label": "sports"},
    ]
    return {
        "train": write_jsonl(root / "train.jsonl", rows[:16] + bad[:1]),
        "dev": write_jsonl(root / "dev.jsonl", rows[16:] + bad),
        "qa": write_jsonl(root / "qa.jsonl", qa_rows),
        "summarize": write_jsonl(root / "sum.jsonl", sum_rows),
        "multi": write_jsonl(
            root / "multi.jsonl",
            [{**r, "label": [r["label"], "x"] if j % 2 else [r["label"]]} for j, r in enumerate(rows)],
        ),
        "regression": write_jsonl(root / "reg.jsonl", [{**r, "label": j / 7} for j, r in enumerate(rows)]),
    }


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-bases")
    return {
        "classify": make_tiny_checkpoint(root / "c", "bigbird", "sequence_classification", hidden_dropout_prob=0.1),
        "qa": make_tiny_checkpoint(root / "q", "bigbird", "question_answering"),
        "summarize": make_tiny_checkpoint(root / "s", "pegasus", "conditional_generation"),
    }


def test_labels_come_from_the_data_and_bad_records_are_counted(bigbird, bases, data, tmp_path):
    out = tmp_path / "out"
    result = bigbird(
        "finetune",
        "classify",
        "--model",
        bases["classify"],
        "--jsonl",
        data["train"],
        "--eval-jsonl",
        data["dev"],
        "-o",
        out,
        *STEPS,
        check_rc=0,
    )
    said = result.stderr.decode()
    assert "1 without a 'label'" in said  # in the training data
    assert "left out: 1 without a 'label'; 1 with a label the training set doesn't have" in said
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "food", "1": "law", "2": "weather"}
    assert config["problem_type"] == "single_label_classification"
    for kind, problem in (("multi", "multi_label_classification"), ("regression", "regression")):
        bigbird(
            "finetune",
            "classify",
            "--model",
            bases["classify"],
            "--jsonl",
            data[kind],
            "-o",
            tmp_path / kind,
            "--max-steps",
            "2",
            "--threads",
            "1",
            check_rc=0,
        )
        assert json.loads((tmp_path / kind / "config.json").read_text())["problem_type"] == problem
    assert json.loads((tmp_path / "multi" / "config.json").read_text())["id2label"]["3"] == "x"


@pytest.mark.parametrize(
    "args, said",
    [
        (["--jsonl", "missing.jsonl"], "missing.jsonl does not exist."),
        (["--max-steps", "0"], "--max-steps"),
        ([], "no training data"),
        (["--jsonl", "{train}", "--dtype", "float16"], "--dtype float16 trains on a GPU only"),
    ],
)
def test_a_bad_option_is_one_sentence_before_any_model_loads(bigbird, data, tmp_path, args, said):
    args = [a.format(train=data["train"]) for a in args]
    result = bigbird("finetune", "classify", "--model", tmp_path / "no-such-model", "-o", tmp_path / "o", *args)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_stop_and_resume_ends_bit_equal_to_an_unbroken_run(bigbird, bases, data, tmp_path, stop):
    """Dropout is on (0.1), so the random numbers must follow the step for the two runs to agree. SIGTERM (timeout,
    Slurm) stops in order, as Ctrl-C does: one sentence saying how to go on, exit 143, the saved state kept."""
    common = [
        "finetune",
        "classify",
        "--model",
        bases["classify"],
        "--jsonl",
        data["train"],
        "--eval-jsonl",
        data["dev"],
        *STEPS,
        "--learning-rate",
        "3e-3",
    ]
    bigbird(*common, "-o", tmp_path / "a", "--log", tmp_path / "a.log", check_rc=0)

    code, _, said = stopped_run(
        [*common[0:], "-o", tmp_path / "b", "--log", tmp_path / "b.log"], b"saved the state at step 2", stop
    )
    if stop == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 143 and "Traceback" not in said
        assert f"error: terminated; `--resume -o {tmp_path / 'b'}` continues from the last saved step." in said
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = bigbird(*common, "-o", tmp_path / "b", "--log", tmp_path / "b.log", "--resume", check_rc=0)
    assert "resuming after step" in resumed.stderr.decode()

    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert jsonl(tmp_path / "a.log") == jsonl(tmp_path / "b.log")
    states = [torch.load(tmp_path / run / "checkpoint" / "state.pt", weights_only=False) for run in "ab"]
    for a, b in zip(states[0]["optimizer"]["state"].values(), states[1]["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # And the two runs did train: the weights moved from the base's.
    base = load_file(bases["classify"] / "model.safetensors")
    trained = load_file(tmp_path / "a" / "model.safetensors")
    name = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(base[name], trained[name])


def test_resume_refuses_other_options(bigbird, bases, data, tmp_path):
    common = ["finetune", "classify", "--model", bases["classify"], "--jsonl", data["train"], "-o", tmp_path / "a"]
    bigbird(*common, "--max-steps", "2", "--threads", "1", check_rc=0)
    result = bigbird(*common, "--max-steps", "2", "--seed", "5", "--resume")
    assert result.returncode == 2 and "--seed differs" in result.stderr.decode()
    again = bigbird(*common, "--max-steps", "2")
    assert again.returncode == 2 and "is not empty" in again.stderr.decode()


TASK_ARGS = {
    "classify": ("classify", "--jsonl", "train"),
    "qa": ("qa", "--jsonl", "qa"),
    "summarize": ("summarize", "--jsonl", "summarize"),
}


@pytest.mark.parametrize("task", list(TASK_ARGS))
def test_out_dir_loads_in_the_task_command_and_in_transformers_with_equal_outputs(bigbird, bases, data, tmp_path, task):
    import transformers

    command, flag, name = TASK_ARGS[task]
    out = tmp_path / "out"
    extra = ("--max-target-tokens", "12") if task == "summarize" else ()
    bigbird(
        "finetune",
        command,
        "--model",
        bases[task],
        flag,
        data[name],
        "-o",
        out,
        "--max-steps",
        "3",
        "--learning-rate",
        "1e-2",
        "--threads",
        "1",
        "--max-length",
        "64",
        *extra,
        check_rc=0,
    )
    for file in ("config.json", "model.safetensors", "spiece.model", "tokenizer_config.json"):
        assert (out / file).is_file(), file
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 64

    import bigbird as library

    architecture = json.loads((out / "config.json").read_text())["architectures"][0]
    ours = getattr(library, architecture).from_pretrained(out)
    theirs = getattr(transformers, architecture).from_pretrained(out).eval()
    ids = torch.tensor([[65, 20, 21, 22, 23, 24, 25, 66, 30, 31, 32, 33, 1]])
    with torch.no_grad():
        a, b = ours(ids), theirs(ids)
    for key in ("logits", "start_logits", "end_logits"):
        if getattr(b, key, None) is not None:
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)
    if task == "summarize":
        torch.testing.assert_close(ours.generate(ids), theirs.generate(ids))
    # The task command reads OUT_DIR as any checkpoint.
    records = jsonl(bigbird(command, "--model", out, "--jsonl", data[name], "--threads", "1", check_rc=0).stdout)
    assert records and all("error" not in r for r in records)


def test_gradient_checkpointing_trains_the_same_model_and_bfloat16_autocast_trains(bigbird, bases, data, tmp_path):
    """Recomputed layers draw the same dropout masks again (torch restores the generator), so the weights match."""
    common = [
        "finetune",
        "classify",
        "--model",
        bases["classify"],
        "--jsonl",
        data["train"],
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--learning-rate",
        "1e-2",
    ]
    bigbird(*common, "-o", tmp_path / "plain", check_rc=0)
    bigbird(*common, "-o", tmp_path / "recomputed", "--gradient-checkpointing", check_rc=0)
    plain, recomputed = (load_file(tmp_path / run / "model.safetensors") for run in ("plain", "recomputed"))
    assert all(torch.allclose(plain[k], recomputed[k], atol=1e-6) for k in plain)
    bigbird(*common, "-o", tmp_path / "bf16", "--dtype", "bfloat16", "--log", tmp_path / "bf16.log", check_rc=0)
    losses = [entry["loss"] for entry in jsonl(tmp_path / "bf16.log")]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
    assert load_file(tmp_path / "bf16" / "model.safetensors")[next(iter(plain))].dtype == torch.float32


def write_folder(root, rows, loose: int = 0):
    """rows as files sorted into one subfolder per label (`root/food/d3.txt`), plus `loose` files directly in root."""
    for row in rows:
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        (root / row["label"] / f"{row['id']}.txt").write_text(row["text"])
    for k in range(loose):
        (root / f"loose{k}.txt").write_text("A file no label folder holds.")
    return str(root)


def test_classify_trains_on_folders_whose_subfolders_name_the_labels(bigbird, bases, data, tmp_path):
    """train/food/*.txt are 'food' documents; a file directly in the folder given has no label: counted, left out,
    as is a binary file (the task commands' readers). The dev folder (--eval-dir) is scored with the labels its
    subfolders name."""
    rows = [json.loads(line) for line in open(data["train"])]
    labelled = [r for r in rows if "label" in r]
    train = write_folder(tmp_path / "train", labelled, loose=2)
    (tmp_path / "train" / "food" / "scan.txt").write_bytes(b"\x00\x01binary")  # read as inference reads it
    (tmp_path / "train" / "law" / "latin1.txt").write_bytes("Caf\xe9 law.".encode("latin-1"))  # kept, replaced
    dev_rows = [json.loads(line) for line in open(data["dev"]) if "label" in json.loads(line)]
    dev = write_folder(tmp_path / "dev", dev_rows, loose=1)
    out = tmp_path / "out"
    args = ["finetune", "classify", train, "--eval-dir", dev, "--model", bases["classify"], "-o", out, *STEPS]
    result = bigbird(*args, "--log", tmp_path / "log.jsonl", check_rc=0)
    said = result.stderr.decode()
    assert "2 without a label folder" in said and "1 unreadable" in said  # the loose files; the binary one
    assert "left out: 1 without a label folder; 1 with a label the training set doesn't have" in said  # 'sports'
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "food", "1": "law", "2": "weather"}
    scored = [e["dev"] for e in jsonl(tmp_path / "log.jsonl") if "dev" in e]
    assert scored and all(0 <= dev["accuracy"] <= 100 for dev in scored)  # the 8 dev files with a known label


@pytest.mark.parametrize("task", ["qa", "summarize"])
@pytest.mark.parametrize("where", ["train", "dev"])
def test_qa_and_summarize_refuse_folders_before_any_model_loads(bigbird, data, tmp_path, task, where):
    folder = write_folder(tmp_path / "docs", [{"id": "a", "text": "Rain fell.", "label": "weather"}])
    args = [folder, "--jsonl", data[task]] if where == "train" else ["--jsonl", data[task], "--eval-dir", folder]
    result = bigbird("finetune", task, "--model", tmp_path / "no-such-model", "-o", tmp_path / "o", *args)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert f"finetune {task} can't train on folders" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
