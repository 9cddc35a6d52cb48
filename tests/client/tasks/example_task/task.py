"""The example task: is the sum of the spelled-out digits even or odd? (sequence classification).

``"three one four"`` -> label 0 (8 is even). The data are generated from ``seed`` alone, so every
process builds the same rows; the label column lets ``data.partitioner = dirichlet`` skew clients.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from client.tasks._batching import attention_mask_for, chunks, eval_mode, logits_of, pad_sequences, pad_token_id
from client.tasks.base import ModelKind, Task, TaskMetrics
from client.tasks.registry import register_task
from contract import RunConfig
from tests.client.tasks.example_task.config import DigitParityConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@register_task
class DigitParity(Task):
    """Parity of the sum of spelled-out digits; accuracy (chance 0.5)."""

    name: ClassVar[str] = "digit-parity"
    model_kind: ClassVar[ModelKind] = "sequence-classification"
    main_metric: ClassVar[str] = "accuracy"
    config_section: ClassVar[type[DigitParityConfig]] = DigitParityConfig

    def __init__(self, *, seed: int, max_length: int) -> None:
        super().__init__(seed=seed, max_length=max_length)
        self.settings = DigitParityConfig()

    def configure(self, config: RunConfig) -> None:
        """Read ``digit-parity.*`` from the validated run config."""
        super().configure(config)
        self.settings = config.section(DigitParityConfig)

    @property
    def num_labels(self) -> int:
        """Two classes: even (0) and odd (1)."""
        return 2

    def build_datasets(self) -> DatasetDict:
        """``train`` and ``test`` with columns ``text`` and ``label``, seeded per split."""
        features = Features({"text": Value("string"), "label": ClassLabel(names=["even", "odd"])})
        sizes = {"train": self.settings.num_train, "test": self.settings.num_test}
        splits = {}
        for index, (split, size) in enumerate(sizes.items()):
            rng = random.Random(f"{self.seed}-{index}")
            digits = [[rng.randrange(10) for _ in range(self.settings.length)] for _ in range(size)]
            splits[split] = Dataset.from_dict(
                {"text": [" ".join(DIGITS[d] for d in row) for row in digits],
                 "label": [sum(row) % 2 for row in digits]},
                features=features,
            )
        return DatasetDict(splits)

    def collate(self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Tokenize, truncate to ``max_length``, right-pad; ``labels`` is the parity."""
        encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=self.max_length)["input_ids"]
        return {
            "input_ids": pad_sequences(encoded, value=pad_token_id(tokenizer)),
            "attention_mask": attention_mask_for(encoded),
            "labels": torch.tensor([int(row["label"]) for row in rows], dtype=torch.long),
        }

    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy per example, shape ``(B,)``."""
        logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))  # (B, 2)
        return F.cross_entropy(logits.float(), batch["labels"], reduction="none")

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *, batch_size: int
    ) -> TaskMetrics:
        """Mean ``loss`` and ``accuracy`` over ``rows``."""
        loss_sum, correct = 0.0, 0
        with eval_mode(model):
            for chunk in chunks(rows, batch_size):
                batch = self.collate(tokenizer, list(chunk))
                logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])).float()
                loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
                correct += int((logits.argmax(dim=-1) == batch["labels"]).sum().item())
        n = len(rows)
        return TaskMetrics(values={"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1)}, num_examples=n)
