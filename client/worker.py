"""Per-process state of a client worker: the frozen base model, built once, and the task data.

A simulation worker (a Ray actor) serves many clients in turn. Building the base model and the
task's data pool is the expensive part, and both are the same for every client of a run, so they
are built on the first message and reused; a client's own state is only its adapter payload, which
arrives with every message and is loaded over the previous client's. Nothing per client is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

from flwr.common.logger import log

from adapters.base_delta import BaseWeights
from adapters.payload import layout
from adapters.rank_resize import set_lora_rank
from client.tasks.base import Task
from client.tasks.partition import partition_dataset
from client.tasks.setup import build_task_and_model
from contract import RunConfig


@dataclass
class Worker:
    """The reusable pieces: task, adapted model, tokenizer, and the task's data pool."""

    key: str
    task: Task
    model: Any
    tokenizer: Any
    datasets: Any
    base: BaseWeights
    layout: dict[str, dict[str, Any]] = field(default_factory=dict)  # adapters.payload.layout(model), fixed
    frozen_hash: str | None = None  # hash of the frozen adapter factors installed in ``model``

    def use_rank(self, rank: int) -> None:
        """Give the adapter rank ``rank`` (per-client ranks, ``docs/algorithms.md §18``); the layout follows."""
        if set_lora_rank(self.model, rank):
            self.layout = layout(self.model)

    def train_rows(self, config: RunConfig, *, partition_id: int, num_partitions: int) -> list[dict[str, Any]]:
        """This client's shard of the training pool (seed-stable; flwr-datasets partitioners)."""
        shard = partition_dataset(
            self.task.train_pool(self.datasets, num_partitions),
            partitioner=config.data.partitioner,
            num_partitions=num_partitions,
            partition_id=partition_id,
            alpha=config.data.alpha,
            seed=config.seed,
            label_column=self.task.label_column,
        )
        return shard.to_list()

    def test_rows(self, *, partition_id: int, num_partitions: int, seed: int) -> list[dict[str, Any]]:
        """This client's IID share of the global test split, for federated evaluation."""
        shard = partition_dataset(
            self.datasets["test"],
            partitioner="iid",
            num_partitions=num_partitions,
            partition_id=partition_id,
            alpha=1.0,
            seed=seed,
            label_column=None,
        )
        return shard.to_list()


_CACHE: dict[str, Worker] = {}


@dataclass
class BuildCounter:
    """How many times this process built a base model and task data (a warm node worker: once per run)."""

    count: int = 0


BUILDS = BuildCounter()


# Run-config fields that never change what a worker builds (the model, adapter, task and its data);
# every other field, plugin sections included, is part of the worker's identity.
_NOT_WORKER_STATE = frozenset(
    {"num_server_rounds", "fraction_train", "fraction_evaluate", "min_train_nodes", "output_dir", "run_name",
     "strategy", "train", "data", "eval", "privacy", "faults", "resume_from",
     "round_timeout", "audit", "validation"}
)


def worker_key(config: RunConfig, adapter_kind: str) -> str:
    """What determines the base model, adapter shape, task and data: equal keys may share a worker."""
    relevant = {k: v for k, v in config.model_dump().items() if k not in _NOT_WORKER_STATE}
    relevant["adapter-kind"] = adapter_kind  # `adapter.name = auto`: the kind the server resolved
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def get_worker(config: RunConfig, adapter_kind: str) -> Worker:
    """The cached worker for ``config`` with the server's ``adapter_kind``, built on first use (one per
    process; older ones dropped)."""
    key = worker_key(config, adapter_kind)
    worker = _CACHE.get(key)
    if worker is None:
        _CACHE.clear()  # a new run in the same process: free the previous base model first
        started = time.perf_counter()
        built = build_task_and_model(config, adapter_kind)
        BUILDS.count += 1
        log(INFO, "client worker (pid %d): built %s with %s adapters and the %s data in %.2f s (build %d of this process)",
            os.getpid(), config.model.name, adapter_kind, config.task.name, time.perf_counter() - started, BUILDS.count)
        worker = Worker(
            key=key,
            task=built.task,
            model=built.model,
            tokenizer=built.tokenizer,
            datasets=built.datasets,
            base=BaseWeights(built.model, storage=config.model.base_delta_storage()),
            layout=layout(built.model),
        )
        _CACHE[key] = worker
    return worker
