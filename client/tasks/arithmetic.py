"""``arithmetic``: GSM8K-style one- and two-step word problems with exact integer answers.

Problems are built from templates by a ``random.Random`` seeded from ``(seed, split)`` (the global
RNG is never touched). Each problem has a ``kind`` (the operation, see :data:`KIND_NAMES`) that
serves as the label column, so a Dirichlet partition skews clients by problem type. The operands
appear in the question in the order the kind's formula (:data:`FORMULAS`) takes them.

Training text is ``"Question: {question}\\nAnswer: {answer}"`` followed by EOS. Prompt and target
are tokenized separately and concatenated, so the loss mask covers exactly the answer tokens and
the EOS, and generation at evaluation starts from exactly the training prompt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from client.tasks._batching import (
    attention_mask_for,
    chunks,
    eval_mode,
    generate_ids,
    logits_of,
    model_device,
    pad_sequences,
    pad_token_id,
    to_device,
)
from client.tasks.base import ModelKind, Task, TaskMetrics
from client.tasks.generated_pool import POOL_ROW, GeneratedPool
from client.tasks.registry import register_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100

KIND_NAMES: tuple[str, ...] = (
    "addition", "subtraction", "multiplication", "division", "add-subtract", "multiply-add",
)

FORMULAS: tuple[Callable[..., int], ...] = (
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a * b,
    lambda a, b: a // b,
    lambda a, b, c: a + b - c,
    lambda a, b, c: a * b + c,
)

TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{name} has {a} {items} and buys {b} more. How many {items} does {name} have now?",
     "There are {a} {items} in a basket. {name} puts in {b} more. How many {items} are in the basket?",
     "{name} found {a} {items} in the morning and {b} in the afternoon. How many {items} did {name} find?"),
    ("{name} had {a} {items} and gave {b} to {friend}. How many {items} does {name} have left?",
     "A shelf holds {a} {items}. {name} takes {b} of them. How many {items} are still on the shelf?",
     "{name} had {a} {items} and lost {b}. How many {items} does {name} have now?"),
    ("{name} buys {a} boxes of {items}. Each box holds {b} {items}. How many {items} does {name} buy?",
     "There are {a} bags with {b} {items} in each bag. How many {items} are there in total?",
     "{name} gets {a} {items} every day for {b} days. How many {items} does {name} get?"),
    ("{name} shares {a} {items} equally among {b} friends. How many {items} does each friend get?",
     "{a} {items} are packed into {b} equal boxes. How many {items} are in each box?",
     "{name} has {a} {items} and puts them into groups of {b}. How many groups are there?"),
    ("{name} has {a} {items}, buys {b} more and gives {c} to {friend}. "
     "How many {items} does {name} have now?",
     "A box has {a} {items}. {name} adds {b} and then removes {c}. How many {items} are in the box?"),
    ("{name} buys {a} packs of {items} with {b} in each pack and already has {c}. "
     "How many {items} does {name} have?",
     "There are {a} rows of {items} with {b} in each row, plus {c} extra. How many {items} are there?"),
)

NAMES: tuple[str, ...] = (
    "Tom", "Anna", "Ben", "Maria", "Sam", "Lucy", "Omar", "Priya", "Jack", "Mia", "Leo", "Sara",
    "David", "Emma", "Noah", "Grace", "Ravi", "Chloe", "Carlos", "Nina",
)
ITEMS: tuple[str, ...] = (
    "apples", "pencils", "marbles", "stickers", "cookies", "books", "cards", "shells", "balloons",
    "oranges", "crayons", "buttons", "stamps", "candles", "toy cars",
)

_INT = re.compile(r"-?\d+")
_KIND = ClassLabel(names=list(KIND_NAMES))  # the label column


@dataclass(frozen=True)
class Problem:
    """One generated problem: its ``kind`` index, operands (in question order) and text."""

    kind: int
    operands: tuple[int, ...]
    question: str

    @property
    def answer(self) -> int:
        """The exact integer answer, ``FORMULAS[kind](*operands)``."""
        return FORMULAS[self.kind](*self.operands)


def _operands(rng: random.Random, kind: int) -> tuple[int, ...]:
    if kind == 0:
        return rng.randint(2, 50), rng.randint(2, 50)
    if kind == 1:
        a = rng.randint(10, 60)
        return a, rng.randint(1, a - 1)
    if kind == 2:
        return rng.randint(2, 12), rng.randint(2, 12)
    if kind == 3:
        b, quotient = rng.randint(2, 10), rng.randint(2, 12)
        return b * quotient, b
    if kind == 4:
        a, b = rng.randint(5, 40), rng.randint(2, 30)
        return a, b, rng.randint(1, a + b - 1)
    return rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)


def make_problem(rng: random.Random, kind: int) -> Problem:
    """Draw one problem of the given ``kind`` (index into :data:`KIND_NAMES`)."""
    ops = _operands(rng, kind)
    name, friend = rng.sample(NAMES, 2)
    slots = dict(zip("abc", ops))
    question = rng.choice(TEMPLATES[kind]).format(name=name, friend=friend, items=rng.choice(ITEMS), **slots)
    return Problem(kind=kind, operands=ops, question=question)


def _split_kinds(seed: int, split: str, size: int) -> tuple[random.Random, list[int]]:
    """The split's random stream and its balanced, shuffled kinds drawn first from it."""
    rng = random.Random(f"corolla-arithmetic:{seed}:{split}")
    kinds = [i % len(KIND_NAMES) for i in range(size)]
    rng.shuffle(kinds)
    return rng, kinds


def generate_split(seed: int, split: str, size: int) -> dict[str, list[Any]]:
    """Columns ``question``/``answer``/``kind`` of one split; kinds are balanced."""
    rng, kinds = _split_kinds(seed, split, size)
    problems = [make_problem(rng, k) for k in kinds]
    return {
        "question": [p.question for p in problems],
        "answer": [str(p.answer) for p in problems],
        "kind": [p.kind for p in problems],
    }


def grown_kinds(seed: int, split: str, size: int) -> list[int]:
    """The ``kind`` column of a grown pool of ``size`` rows (balanced, shuffled), without the problems:
    the index pool a partitioner reads (``client.tasks.generated_pool``). The same kinds in the same
    order as :func:`generate_split` of that size, so a split drawn on it is the one drawn on the full pool."""
    return _split_kinds(seed, split, size)[1]


def grown_row(seed: int, split: str, row: int, kind: int) -> dict[str, Any]:
    """Row ``row`` of a grown pool, of the given ``kind``, from a random stream of its own: the same in
    every process, whatever else is generated there."""
    problem = make_problem(random.Random(f"corolla-arithmetic:{seed}:{split}:grown:{row}"), kind)
    return {"question": problem.question, "answer": str(problem.answer), "kind": kind}


def parse_answer(text: str) -> int | None:
    """The first (optionally negative) integer in ``text``, or ``None``."""
    match = _INT.search(text)
    return int(match.group()) if match else None


def _encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's leading special tokens (e.g. BOS) but none after."""
    full = list(tokenizer(text)["input_ids"])
    bare = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[: start + len(bare)]
    return bare


@register_task
class ArithmeticWordProblems(Task):
    """Word problems answered by a causal LM; ranked by greedy-decoding ``exact_match``.

    Parameters
    ----------
    seed : int
        Generation seed; the datasets are a pure function of it and the sizes.
    max_length : int
        Token budget per example. Prompts are truncated from the left so the answer always fits;
        questions are at most ~110 characters (a whole training text at most ~130 bytes), so a
        byte-level tokenizer wants ``max_length >= 136``; subword tokenizers need about 48.
    num_train, num_test : int
        Sizes of the train pool and the held-out test split.
    max_new_tokens : int
        Generation budget at evaluation (answers are at most 3 digits).
    """

    name: ClassVar[str] = "arithmetic"
    model_kind: ClassVar[ModelKind] = "causal-lm"
    label_column: ClassVar[str | None] = "kind"
    main_metric: ClassVar[str] = "exact_match"

    def __init__(self, *, seed: int, max_length: int, num_train: int = 3000, num_test: int = 600,
                 max_new_tokens: int = 6) -> None:
        super().__init__(seed=seed, max_length=max_length)
        if num_train < 1 or num_test < 1:
            raise ValueError(f"num_train and num_test must be >= 1, got {num_train}, {num_test}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.num_train = num_train
        self.num_test = num_test
        self.max_new_tokens = max_new_tokens
        self._grown = GeneratedPool(
            lambda size: Dataset.from_dict({"kind": grown_kinds(seed, "train", size)}, features=Features({"kind": _KIND})),
            lambda index_row: grown_row(seed, "train", index_row[POOL_ROW], index_row["kind"]),
        )

    @staticmethod
    def prompt(question: str) -> str:
        """The generation prompt for ``question`` (the training text minus the answer)."""
        return f"Question: {question}\nAnswer:"

    def build_datasets(self) -> DatasetDict:
        """``train`` and ``test`` with columns ``question`` (str), ``answer`` (str), ``kind`` (int)."""
        return DatasetDict({split: self._split(split, size)
                            for split, size in (("train", self.num_train), ("test", self.num_test))})

    def _split(self, split: str, size: int) -> Dataset:
        features = Features({"question": Value("string"), "answer": Value("string"), "kind": _KIND})
        return Dataset.from_dict(generate_split(self.seed, split, size), features=features)

    def train_pool(self, datasets: DatasetDict, num_partitions: int) -> Dataset:
        """At least ``task.examples-per-client`` generated rows per client (``client.tasks.generated_pool``)."""
        per_client = self.config.task.examples_per_client if self.config is not None else 0
        return self._grown.for_federation(datasets["train"], per_client, num_partitions)

    def pool_rows(self, shard: Dataset) -> list[dict[str, Any]]:
        """The shard's rows; those of a grown pool generated here (``client.tasks.generated_pool``)."""
        return self._grown.rows(shard)

    def _target_ids(self, tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
        ids = list(tokenizer(f" {answer}", add_special_tokens=False)["input_ids"])
        eos = getattr(tokenizer, "eos_token_id", None)
        return ids + ([int(eos)] if eos is not None else [])

    def collate(self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask`` of prompt + answer + EOS, and ``labels``
        equal to ``input_ids`` on the answer and EOS tokens and ``-100`` elsewhere."""
        ids, labels = [], []
        for row in rows:
            target = self._target_ids(tokenizer, row["answer"])[: self.max_length]
            budget = self.max_length - len(target)
            prompt = _encode_prompt(tokenizer, self.prompt(row["question"]))
            prompt = prompt[max(0, len(prompt) - budget) :] if budget > 0 else []
            ids.append(prompt + target)
            labels.append([IGNORE_INDEX] * len(prompt) + target)
        return {
            "input_ids": pad_sequences(ids, value=pad_token_id(tokenizer)),
            "attention_mask": attention_mask_for(ids),
            "labels": pad_sequences(labels, value=IGNORE_INDEX),
        }

    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over each example's unmasked target tokens, shape ``(B,)``.

        Only the logits at target positions are upcast and scored, so memory stays
        ``O(#answer tokens x vocab)`` rather than ``O(B x T x vocab)`` in float32."""
        batch = to_device(batch, model_device(model))  # no-op when already there
        logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE_INDEX
        token_losses = F.cross_entropy(logits[:, :-1][mask].float(), targets[mask], reduction="none")
        rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[mask]
        sums = torch.zeros(targets.shape[0], dtype=token_losses.dtype, device=token_losses.device)
        sums = sums.index_add(0, rows, token_losses)
        return sums / mask.sum(dim=1).clamp(min=1).to(sums.dtype)

    def generate_answers(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                         questions: list[str]) -> list[str]:
        """Greedy continuations (decoded, special tokens skipped) of the prompts of ``questions``.

        Prompts are left-padded so all continuations start at the same column. The caller is
        responsible for eval mode / ``no_grad`` (``evaluate`` provides both)."""
        pad = pad_token_id(tokenizer)
        budget = max(1, self.max_length - self.max_new_tokens)
        prompts = [_encode_prompt(tokenizer, self.prompt(q))[-budget:] for q in questions]
        device = model_device(model)
        input_ids = pad_sequences(prompts, value=pad, side="left").to(device)
        attention_mask = attention_mask_for(prompts, side="left").to(device)
        eos = getattr(tokenizer, "eos_token_id", None)
        out = generate_ids(model, input_ids=input_ids, attention_mask=attention_mask,
                           max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)
        return list(tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True))

    def evaluate(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                 batch_size: int) -> TaskMetrics:
        """Mean per-example answer ``loss`` and greedy-decoding ``exact_match`` (first integer of
        the continuation equals the answer) over ``rows``."""
        device = model_device(model)
        loss_sum, correct = 0.0, 0
        with eval_mode(model):
            for chunk in chunks(rows, batch_size):
                chunk = list(chunk)
                batch = to_device(self.collate(tokenizer, chunk), device)
                loss_sum += self.example_losses(model, batch).sum().item()
                texts = self.generate_answers(model, tokenizer, [row["question"] for row in chunk])
                correct += sum(parse_answer(t) == int(row["answer"]) for t, row in zip(texts, chunk))
        n = len(rows)
        return TaskMetrics(values={"loss": loss_sum / n if n else float("nan"),
                                   "exact_match": correct / n if n else float("nan")},
                           num_examples=n)
