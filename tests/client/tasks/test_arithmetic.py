"""The ``arithmetic`` task: correct answers, exact label masking, per-example loss, evaluate."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutput

from client.tasks import ArithmeticWordProblems
from client.tasks.arithmetic import FORMULAS, KIND_NAMES, make_problem, parse_answer

MAX_LEN = 160


@pytest.fixture(scope="module")
def task() -> ArithmeticWordProblems:
    return ArithmeticWordProblems(seed=0, max_length=MAX_LEN)


@pytest.fixture(scope="module")
def dsd(task):
    return task.build_datasets()


def test_schema_and_metadata(task, dsd):
    assert (dsd["train"].num_rows, dsd["test"].num_rows) == (3000, 600)
    assert dsd["train"].column_names == ["question", "answer", "kind"]
    assert dsd["train"].features["kind"].names == list(KIND_NAMES)
    assert (task.name, task.model_kind, task.label_column, task.main_metric) == (
        "arithmetic", "causal-lm", "kind", "exact_match")
    assert task.num_labels is None


def test_deterministic_in_seed(dsd):
    again = ArithmeticWordProblems(seed=0, max_length=MAX_LEN).build_datasets()
    assert again["train"].to_dict() == dsd["train"].to_dict()
    assert again["test"].to_dict() == dsd["test"].to_dict()
    other = ArithmeticWordProblems(seed=1, max_length=MAX_LEN).build_datasets()
    assert sum(a == b for a, b in zip(other["train"]["question"], dsd["train"]["question"])) < 10


@pytest.mark.parametrize("split", ["train", "test"])
def test_answers_are_correct(dsd, split):
    """Recompute every answer from the numbers in the question (they appear in formula order)."""
    for row in dsd[split]:
        numbers = [int(n) for n in re.findall(r"\d+", row["question"])]
        kind = row["kind"]
        assert len(numbers) == (3 if kind >= 4 else 2), row
        if kind == 3:
            assert numbers[0] % numbers[1] == 0, row  # divisions are exact
        expected = {0: lambda a, b: a + b, 1: lambda a, b: a - b, 2: lambda a, b: a * b,
                    3: lambda a, b: a // b, 4: lambda a, b, c: a + b - c,
                    5: lambda a, b, c: a * b + c}[kind](*numbers)
        assert row["answer"] == str(expected), row
        assert expected >= 0


def test_make_problem_answer():
    rng = random.Random(7)
    for kind in list(range(len(KIND_NAMES))) * 20:
        problem = make_problem(rng, kind)
        assert problem.kind == kind
        assert problem.answer == FORMULAS[kind](*problem.operands)
        assert [int(n) for n in re.findall(r"\d+", problem.question)] == list(problem.operands)


def test_kinds_balanced_and_few_leaks(dsd):
    counts = Counter(dsd["train"]["kind"])
    assert sorted(counts.values()) == [500] * 6
    assert set(dsd["test"]["kind"]) == set(range(6))
    train = set(dsd["train"]["question"])
    assert sum(q in train for q in dsd["test"]["question"]) / 600 <= 0.02


def test_parse_answer():
    assert parse_answer(" 42</s>") == 42
    assert parse_answer("  7 apples, 9") == 7
    assert parse_answer("-3") == -3
    assert parse_answer("no digits") is None


def test_labels_cover_exactly_the_answer(task, dsd, bytes_tokenizer):
    rows = [dsd["train"][i] for i in range(8)]
    batch = task.collate(bytes_tokenizer, rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    eos = bytes_tokenizer.eos_token_id
    for i, row in enumerate(rows):
        n = int(batch["attention_mask"][i].sum())
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert (batch["attention_mask"][i, :n] == 1).all() and (batch["attention_mask"][i, n:] == 0).all()
        answer_ids = bytes_tokenizer(f" {row['answer']}", add_special_tokens=False)["input_ids"] + [eos]
        target = labels != -100
        assert int(target.sum()) == len(answer_ids)
        assert target[n - len(answer_ids) : n].all()  # the unmasked block is the end of the sequence
        assert labels[target].tolist() == ids[n - len(answer_ids) : n].tolist() == answer_ids
        text = bytes_tokenizer.decode(ids[:n].tolist())
        assert text == f"Question: {row['question']}\nAnswer: {row['answer']}</s>"


def test_prompt_keeps_leading_specials_only(task, dsd, minilm_tokenizer):
    """A tokenizer that wraps text in [CLS] ... [SEP]: the prompt keeps [CLS] but not [SEP]."""
    row = dsd["train"][0]
    batch = task.collate(minilm_tokenizer, [row])
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == minilm_tokenizer.cls_token_id
    assert minilm_tokenizer.sep_token_id not in ids  # no EOS either: MiniLM has none
    target = batch["labels"][0] != -100
    assert batch["labels"][0][target].tolist() == minilm_tokenizer(
        f" {row['answer']}", add_special_tokens=False)["input_ids"]


def test_truncation_keeps_the_answer(dsd, bytes_tokenizer):
    short = ArithmeticWordProblems(seed=0, max_length=24)
    rows = [dsd["train"][i] for i in range(4)]
    batch = short.collate(bytes_tokenizer, rows)
    assert batch["input_ids"].shape[1] == 24
    for i, row in enumerate(rows):
        text = bytes_tokenizer.decode(batch["input_ids"][i].tolist())
        assert text.endswith(f"\nAnswer: {row['answer']}</s>")


def test_pad_falls_back_to_eos(task, dsd, bytes_tokenizer_no_pad):
    rows = [dsd["train"][i] for i in range(4)]
    batch = task.collate(bytes_tokenizer_no_pad, rows)
    pads = batch["attention_mask"] == 0
    assert pads.any()
    assert (batch["input_ids"][pads] == bytes_tokenizer_no_pad.eos_token_id).all()
    assert (batch["labels"][pads] == -100).all()


def _manual_loss(model, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids[None]).logits[0]
    positions = [t for t in range(len(ids) - 1) if labels[t + 1] != -100]
    token_losses = [F.cross_entropy(logits[t], labels[t + 1]) for t in positions]
    return torch.stack(token_losses).mean()


def test_example_losses_match_manual(task, dsd, bytes_tokenizer, tiny_llama):
    rows = [dsd["train"][i] for i in (0, 1, 2, 5, 9)]
    batch = task.collate(bytes_tokenizer, rows)
    losses = task.example_losses(tiny_llama, batch)
    assert losses.shape == (5,)
    for i in range(5):  # each example alone, unpadded
        n = int(batch["attention_mask"][i].sum())
        expected = _manual_loss(tiny_llama, batch["input_ids"][i, :n], batch["labels"][i, :n])
        assert torch.allclose(losses[i], expected, atol=1e-5), (losses[i], expected)
    losses.mean().backward()
    assert tiny_llama.lm_head.weight.grad is not None


class OracleLM(torch.nn.Module):
    """Fake causal LM whose ``generate`` appends a fixed answer (looked up by prompt) and EOS."""

    def __init__(self, tokenizer, answers: dict[str, int], offset: int = 0):
        super().__init__()
        self.tokenizer, self.answers, self.offset = tokenizer, answers, offset
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen_masks: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask):
        return CausalLMOutput(logits=torch.zeros(*input_ids.shape, len(self.tokenizer)) + self.weight)

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, **_):
        assert not self.training and not torch.is_grad_enabled()
        self.seen_masks.append(attention_mask)
        new = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tokenizer.decode(ids[mask.bool()].tolist())
            answer = self.answers[prompt] + self.offset
            new.append(self.tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [eos_token_id])
        width = max(map(len, new))
        new = [seq + [pad_token_id] * (width - len(seq)) for seq in new]
        return torch.cat([input_ids, torch.tensor(new)[:, :max_new_tokens]], dim=1)


def test_evaluate_exact_match_with_oracle(task, dsd, bytes_tokenizer):
    rows = [dsd["test"][i] for i in range(13)]
    answers = {task.prompt(r["question"]): int(r["answer"]) for r in rows}
    oracle = OracleLM(bytes_tokenizer, answers).train()
    metrics = task.evaluate(oracle, bytes_tokenizer, rows, batch_size=4)
    assert metrics.num_examples == 13
    assert metrics.values["exact_match"] == 1.0
    vocab = len(bytes_tokenizer)
    assert metrics.values["loss"] == pytest.approx(torch.log(torch.tensor(float(vocab))).item(), rel=1e-5)
    assert oracle.training  # restored
    # prompts were left-padded: every row's last prompt column is a real token
    assert all(mask[:, -1].all() for mask in oracle.seen_masks)
    assert any((mask == 0).any() for mask in oracle.seen_masks)

    wrong = OracleLM(bytes_tokenizer, answers, offset=1)
    assert task.evaluate(wrong, bytes_tokenizer, rows, batch_size=5).values["exact_match"] == 0.0


def test_evaluate_real_tiny_llama(task, dsd, bytes_tokenizer, tiny_llama):
    rows = [dsd["test"][i] for i in range(6)]
    tiny_llama.train()
    metrics = task.evaluate(tiny_llama, bytes_tokenizer, rows, batch_size=3)
    assert tiny_llama.training
    assert 0.0 <= metrics.values["exact_match"] <= 1.0
    tiny_llama.eval()
    with torch.no_grad():
        losses = task.example_losses(tiny_llama, task.collate(bytes_tokenizer, rows))
    assert metrics.values["loss"] == pytest.approx(losses.mean().item(), rel=1e-4)
    # greedy decoding is batch-independent: one-by-one generation gives the same continuations
    with torch.no_grad():
        together = task.generate_answers(tiny_llama, bytes_tokenizer, [r["question"] for r in rows])
        alone = [task.generate_answers(tiny_llama, bytes_tokenizer, [r["question"]])[0] for r in rows]
    assert together == alone
