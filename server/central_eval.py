"""Central evaluation: the global adapter on the task's held-out global test split, on the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from adapters.base_delta import BaseWeights
from adapters.payload import load
from client.tasks.base import Task, TaskMetrics

BaseDeltaSource = Callable[[], dict[str, np.ndarray] | None]


class CentralEvaluator:
    """Evaluate global arrays with ``task`` on ``rows`` using the server's own adapted model.

    ``base_deltas`` (optional) returns the strategy's current cumulative base delta ``D`` per module,
    or ``None`` for a strategy that never changes the frozen base; with a delta the model's base is
    set to ``W0 + D`` before each evaluation (FedEx-LoRA, FLoRA).
    """

    def __init__(
        self,
        task: Task,
        model: Any,
        tokenizer: Any,
        rows: list[dict[str, Any]],
        *,
        batch_size: int,
        base: BaseWeights | None = None,
        base_deltas: BaseDeltaSource | None = None,
    ) -> None:
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.rows = rows
        self.batch_size = batch_size
        self.base = base
        self.base_deltas = base_deltas

    def __call__(self, arrays: ArrayRecord) -> TaskMetrics:
        """Load ``arrays`` (and the current base) into the model and evaluate."""
        deltas = self.base_deltas() if self.base_deltas is not None else None
        if self.base is not None and deltas is not None:
            self.base.set(deltas)
        load(self.model, {key: array.numpy() for key, array in arrays.items()})
        return self.task.evaluate(self.model, self.tokenizer, self.rows, batch_size=self.batch_size)
