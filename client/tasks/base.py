"""The task-plugin contract: what a client-side task provides to the training loop.

A task owns its data (deterministic generation or loading), how examples become tensors, the
per-example loss and its evaluation metrics. The platform owns everything else: the model and its
adapter (``adapters``), partitioning across clients (``client.tasks.partition``), DP-SGD
(``privacy``) and the federated loop. See ``shared/spec/plugins.md`` §0.

The loss is returned **per example** (shape ``(B,)``) so that the training loop can reduce it to a
batch mean and Opacus can clip per sample without the task knowing about either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from datasets import DatasetDict

ModelKind = Literal["sequence-classification", "causal-lm", "masked-lm"]


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one evaluation pass, keyed ``name -> value``, over ``num_examples`` examples."""

    values: dict[str, float]
    num_examples: int


class Task(ABC):
    """One client-side task. Subclasses are registered by name in ``client.tasks.registry``.

    Attributes
    ----------
    name : str
        Registry name, as the user writes it in ``task.name``.
    model_kind : {"sequence-classification", "causal-lm"}
        Which head the base model needs; ``adapters.build_base_model`` builds it.
    label_column : str or None
        Column that Dirichlet / pathological partitioners split by; ``None`` means only IID works.
    main_metric : str
        The metric reports and the compare pipeline rank strategies by (e.g. ``"accuracy"``).
    """

    name: ClassVar[str]
    model_kind: ClassVar[ModelKind]
    label_column: ClassVar[str | None] = "label"
    main_metric: ClassVar[str] = "accuracy"

    def __init__(self, *, seed: int, max_length: int) -> None:
        self.seed = seed
        self.max_length = max_length

    @property
    def num_labels(self) -> int | None:
        """Number of classes for a classification head; ``None`` for causal LM tasks."""
        return None

    @abstractmethod
    def build_datasets(self) -> DatasetDict:
        """Return ``{"train": ..., "test": ...}``: the pool clients are partitioned from, and the
        held-out global test split used for central evaluation. MUST be deterministic in ``seed``."""

    @abstractmethod
    def collate(self, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Turn dataset rows into a batch of tensors (``input_ids``, ``attention_mask``, and the
        targets the task's ``example_losses`` reads), padded to at most ``max_length`` tokens."""

    @abstractmethod
    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example loss, shape ``(B,)``. Differentiable; the caller reduces it."""

    @abstractmethod
    def evaluate(
        self, model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, Any]], *, batch_size: int
    ) -> TaskMetrics:
        """Evaluate ``model`` (in eval mode, under ``torch.no_grad``) on ``rows``.

        Returns at least ``loss`` and ``main_metric``."""
