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

import numpy as np
from datasets import Dataset
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
    _label_counts: tuple[list[Any], np.ndarray] = field(default=([], np.zeros((0, 0), dtype=np.int64)), repr=False)
    _label_counts_key: tuple[Any, ...] | None = field(default=None, repr=False)

    def use_rank(self, rank: int) -> None:
        """Give the adapter rank ``rank`` (per-client ranks, ``docs/algorithms.md §18``); the layout follows."""
        if set_lora_rank(self.model, rank):
            self.layout = layout(self.model)

    def train_rows(self, config: RunConfig, *, partition_id: int, num_partitions: int) -> list[dict[str, Any]]:
        """This client's shard of the training pool (seed-stable; flwr-datasets partitioners)."""
        return self.task.pool_rows(self._train_shard(config, partition_id=partition_id, num_partitions=num_partitions))

    def _train_shard(self, config: RunConfig, *, partition_id: int, num_partitions: int) -> Dataset:
        """This client's partition of the task's train pool (for a grown generated pool: its index rows)."""
        return partition_dataset(
            self.task.train_pool(self.datasets, num_partitions),
            partitioner=config.data.partitioner,
            num_partitions=num_partitions,
            partition_id=partition_id,
            alpha=config.data.alpha,
            seed=config.seed,
            label_column=self.task.label_column,
        )

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

    def local_test_rows(self, config: RunConfig, *, partition_id: int, num_partitions: int) -> list[dict[str, Any]]:
        """This client's test shard drawn like its training shard: per class, the test rows of that class
        are split across clients in proportion to their training examples of it (disjoint; together
        they are the test rows of every class some client trains on). The personalised score of a
        strategy with local layers is measured on it (FedSA-LoRA, ``docs/algorithms.md §14``): a
        personal model is meant for data like its own. An ``iid`` split, or a task without labels,
        gets the IID share (:meth:`test_rows`)."""
        column = self.task.label_column
        if column is None or config.data.partitioner == "iid":
            return self.test_rows(partition_id=partition_id, num_partitions=num_partitions, seed=config.seed)
        classes, counts = self._train_label_counts(config, num_partitions, column)  # counts: (K, C)
        test = self.datasets["test"]
        labels = np.asarray(test[column])
        rng = np.random.default_rng(config.seed)
        picked: list[int] = []
        for c, label in enumerate(classes):
            rows = np.flatnonzero(labels == label)
            rng.shuffle(rows)
            share = counts[:, c]
            if share.sum() == 0:
                continue
            bounds = np.concatenate([[0], np.floor(np.cumsum(share) / share.sum() * len(rows)).astype(int)])  # (K+1,)
            picked.extend(int(i) for i in rows[bounds[partition_id]:bounds[partition_id + 1]])
        return test.select(sorted(picked)).to_list()

    def _train_label_counts(self, config: RunConfig, num_partitions: int, column: str) -> tuple[list[Any], np.ndarray]:
        """Every partition's training examples per label, ``(classes, counts (K, C))``; cached per split."""
        key = (config.data.partitioner, config.data.alpha, config.seed, num_partitions)
        if self._label_counts_key != key:
            shards = [self._train_shard(config, partition_id=k, num_partitions=num_partitions)[column]
                      for k in range(num_partitions)]  # the label column only: no rows generated
            classes = sorted({label for shard in shards for label in shard})
            index = {label: c for c, label in enumerate(classes)}
            counts = np.zeros((num_partitions, len(classes)), dtype=np.int64)
            for k, shard in enumerate(shards):
                for label in shard:
                    counts[k, index[label]] += 1
            self._label_counts, self._label_counts_key = (classes, counts), key
        return self._label_counts


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
