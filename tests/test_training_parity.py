"""One training step's loss and gradients against transformers 5.23.0 on the same weights and batch, for every
head `bigbird finetune` trains, computed in the same run on tiny random models (dropout off).

Full attention is compared in train mode on both sides. Block-sparse attention draws a fresh random plan in train
mode on each side (numpy's global generator in transformers, a torch-seeded one here), which can't be made the
same; so block-sparse is compared in eval mode, where both sides use transformers' plan (every random slot is key
block 0) and gradients still flow through the whole sparse layout: the spelled-out path that training takes.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from test_bigbird_parity import SEP
from test_bigbird_parity import tiny_config as bigbird_config
from test_pegasus_parity import EOS
from test_pegasus_parity import tiny_config as pegasus_config

import bigbird
from bigbird.models.checkpoints import TABLES, translate

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("one_thread")

# The parity tests' tiny configs (8-token blocks, so a couple of hundred tokens run every block-sparse part), with
# dropout off: one step's loss and gradients must be the reference's to the last rounding.
BIGBIRD, PEGASUS = bigbird_config(), pegasus_config()

# (case, class, config overrides, labels): every head and loss the command trains.
SEQ = "BigBirdForSequenceClassification"
CASES = {
    "single_label": (SEQ, {"num_labels": 3, "problem_type": "single_label_classification"}),
    "multi_label": (SEQ, {"num_labels": 3, "problem_type": "multi_label_classification"}),
    "regression": (SEQ, {"num_labels": 1, "problem_type": "regression"}),
    "qa": ("BigBirdForQuestionAnswering", {}),
    "seq2seq_lm": ("BigBirdPegasusForConditionalGeneration", {}),
    "pegasus_single_label": ("BigBirdPegasusForSequenceClassification", {"num_labels": 3}),
    "pegasus_qa": ("BigBirdPegasusForQuestionAnswering", {}),
}


def batch_for(case: str, seq_len: int) -> dict[str, torch.Tensor]:
    """A padded batch of two (the second row ends early) with the labels `bigbird.training.data.collate` makes."""
    g = torch.Generator().manual_seed(3)
    pegasus = case.startswith("seq2seq") or case.startswith("pegasus")
    ids = torch.randint(5, 60, (2, seq_len), generator=g)
    mask = torch.ones(2, seq_len, dtype=torch.long)
    mask[1, seq_len - seq_len // 3 :] = 0
    ids[1, seq_len - seq_len // 3 :] = 0
    if pegasus:
        ids[0, -1] = ids[1, seq_len - seq_len // 3 - 1] = EOS
    batch = {"input_ids": ids, "attention_mask": mask}
    if case in ("single_label", "pegasus_single_label"):
        batch["labels"] = torch.tensor([2, 0])
    elif case == "multi_label":
        batch["labels"] = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    elif case == "regression":
        batch["labels"] = torch.tensor([0.7, -1.2])
    elif case.endswith("qa"):
        batch["start_positions"] = torch.tensor([9, 0])  # the second window holds no answer: [CLS]
        batch["end_positions"] = torch.tensor([11, 0])
        if case == "qa":
            ids[:, 7] = SEP
            batch["question_lengths"] = torch.tensor([[8], [8]])  # as transformers takes them
    else:
        labels = torch.randint(5, 60, (2, 12), generator=g)
        labels[:, -1] = EOS
        labels[1, 8:] = -100
        batch["labels"] = labels
    return batch


def models(case: str, attention_type: str, tmp_path) -> tuple[torch.nn.Module, torch.nn.Module]:
    name, overrides = CASES[case]
    pegasus = "Pegasus" in name
    config_class = transformers.BigBirdPegasusConfig if pegasus else transformers.BigBirdConfig
    torch.manual_seed(0)
    config = config_class(**{**(PEGASUS if pegasus else BIGBIRD), **overrides, "attention_type": attention_type})
    ref = getattr(transformers, name)(config)
    with torch.no_grad():  # nothing at its init value (zero biases, unit norms), so every gradient is tested
        g = torch.Generator().manual_seed(1)
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    ref.save_pretrained(tmp_path)
    return ref, getattr(bigbird, name).from_pretrained(tmp_path)


def gradients(model: torch.nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    return {names.get(n, n): p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention_type", ["original_full", "block_sparse"])
@pytest.mark.parametrize("case", list(CASES))
def test_one_training_step_matches_transformers(case, attention_type, tmp_path):
    ref, ours = models(case, attention_type, tmp_path)
    sparse = attention_type == "block_sparse"
    # 160 tokens: 20 blocks of 8, block-sparse on both sides (full attention below 9 blocks here).
    batch = batch_for(case, 160)
    for model in (ref, ours):
        model.train(not sparse)
        model.zero_grad()
    ref_loss = ref(**batch).loss
    our_loss = ours(**batch).loss
    ref_loss.backward()
    our_loss.backward()
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)

    table = TABLES[ours.config_class.model_type]
    ours_named = {translate(n, table): p.grad for n, p in ours.named_parameters() if p.grad is not None}
    theirs = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    # Tied weights: one tensor each side, named by whichever owner comes first.
    shared = set(ours_named) & set(theirs)
    assert len(shared) >= len(theirs) - 2 and len(shared) >= 20, (sorted(set(theirs) - shared), sorted(ours_named))
    for name in shared:
        # Each gradient sums thousands of products, in another order on each side: compared relative to its norm.
        error = (ours_named[name] - theirs[name]).norm() / theirs[name].norm().clamp_min(1e-12)
        assert error < 1e-4 or (ours_named[name] - theirs[name]).norm() < 1e-5, f"{name}: relative error {error:.2e}"
    if sparse:
        assert ours.bert.uses_sparse(160) if hasattr(ours, "bert") else ours.model.encoder.uses_sparse(160)


@pytest.mark.parametrize("case", ["single_label", "qa", "seq2seq_lm"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(case, tmp_path):
    """Recomputing each layer in the backward pass (`checkpoint_layers`) changes where activations live, never a
    number: in train mode with dropout on and block-sparse attention drawing its random blocks, one step's loss
    and every gradient are the plain step's bit for bit (the recomputation draws the same random numbers)."""
    from bigbird.training.loop import checkpoint_layers

    _, loaded = models(case, "block_sparse", tmp_path)
    config = loaded.config.copy()
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.1)
    plain, recomputed = type(loaded)(config), type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    recomputed.load_state_dict(loaded.state_dict())
    assert checkpoint_layers(recomputed) >= 2
    batch = batch_for(case, 160)
    steps = {}
    for name, model in (("plain", plain), ("recomputed", recomputed)):
        model.train()
        torch.manual_seed(7)
        loss = model(**batch).loss
        loss.backward()
        steps[name] = loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    (loss, grads), (loss_again, grads_again) = steps["plain"], steps["recomputed"]
    assert torch.equal(loss, loss_again)
    assert grads.keys() == grads_again.keys() and len(grads) >= 20
    for name in grads:
        assert torch.equal(grads[name], grads_again[name]), name
