"""Central evaluation: the global adapter on the task's held-out global test split, on the server."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord

from adapters.payload import load
from client.tasks.base import Task, TaskMetrics


class CentralEvaluator:
    """Evaluate global arrays with ``task`` on ``rows`` using the server's own adapted model."""

    def __init__(self, task: Task, model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, batch_size: int) -> None:
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.rows = rows
        self.batch_size = batch_size

    def __call__(self, arrays: ArrayRecord) -> TaskMetrics:
        """Load ``arrays`` into the model and evaluate."""
        load(self.model, {key: array.numpy() for key, array in arrays.items()})
        return self.task.evaluate(self.model, self.tokenizer, self.rows, batch_size=self.batch_size)
