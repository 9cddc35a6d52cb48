"""Building a run's task and adapted model, the same way on every node and on the server.

The ClientApp's worker (``client.worker``) and the ServerApp (central evaluation, the initial
payload, the export) both call :func:`build_task_and_model`: the task, configured from the run
config, then the base model named by ``model.name`` wrapped in the adapter of ``adapter_kind`` and
shaped for the task, then the task's datasets. The adapter kind is the one the server resolved from
``adapter.name`` and the strategy (clients receive it with every message); the adapted model's
initial factors depend only on ``seed``, so every node starts from the server's initial payload.
The base is placed on ``model.device`` in ``model.dtype`` (or quantized) before the adapter wraps it
(``adapters.precision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import DatasetDict
from peft import PeftModel

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.precision import BasePrecision
from client.tasks.base import Task
from client.tasks.registry import build_task
from contract import RunConfig


@dataclass(frozen=True)
class TaskAndModel:
    """A configured task, the adapted model and its tokenizer, and the task's datasets (``train``: the
    pool clients partition, ``test``: the held-out global split)."""

    task: Task
    model: PeftModel
    tokenizer: Any
    datasets: DatasetDict


def build_task_and_model(config: RunConfig, adapter_kind: str) -> TaskAndModel:
    """The task ``task.name`` configured from ``config``, ``model.name`` adapted with ``adapter_kind``."""
    task = build_task(config.task.name, seed=config.seed, max_length=config.task.max_length)
    task.configure(config)
    model, tokenizer = build_adapted_model(
        config.model.name,
        AdapterSpec.from_config(config.adapter, method=adapter_kind, default_targets=task.adapter_targets),
        kind=task.model_kind,
        num_labels=task.num_labels,
        init_seed=config.seed,
        precision=BasePrecision.from_config(config.model),
    )
    return TaskAndModel(task=task, model=model, tokenizer=tokenizer, datasets=task.build_datasets())
