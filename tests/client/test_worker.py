"""The worker's test shards: the IID share, and the shard drawn like a client's training data (FedSA)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import client.worker as worker_module
from contract import parse_run_config

K = 5
RUN = {"strategy.name": "fedsa", "model.name": "minilm-l6", "task.name": "topics", "data.alpha": 0.3, "seed": 7}


@pytest.fixture(scope="module")
def worker() -> worker_module.Worker:
    worker_module._CACHE.clear()
    return worker_module.get_worker(parse_run_config(RUN), "lora")


def _key(row: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in row.items()))


def test_local_test_shards_follow_each_clients_training_labels_and_partition_the_test_split(worker) -> None:
    config = parse_run_config(RUN)
    column = worker.task.label_column
    test = worker.datasets["test"].to_list()
    shards = [worker.local_test_rows(config, partition_id=k, num_partitions=K) for k in range(K)]
    trains = [Counter(r[column] for r in worker.train_rows(config, partition_id=k, num_partitions=K)) for k in range(K)]
    keys = [Counter(_key(r) for r in shard) for shard in shards]
    assert sum(keys, Counter()) == Counter(_key(r) for r in test if any(t[r[column]] for t in trains))  # disjoint, complete
    for label in {r[column] for r in test}:
        in_test = sum(1 for r in test if r[column] == label)
        trained = np.array([t[label] for t in trains], dtype=np.float64)  # (K,)
        got = np.array([sum(1 for r in shard if r[column] == label) for shard in shards])  # (K,)
        if trained.sum():
            assert np.all(np.abs(got - trained / trained.sum() * in_test) < 1 + 1e-9)  # proportional, to the row
    skewed = [np.array([t[c] for c in sorted(trains[0] | trains[1])]) for t in trains]
    assert max(float(np.ptp(s / s.sum())) for s in skewed) > 0.3  # α = 0.3 really skews the clients
    assert worker.local_test_rows(config, partition_id=2, num_partitions=K) == shards[2]  # deterministic


def test_an_iid_split_gets_the_iid_share(worker) -> None:
    config = parse_run_config({**RUN, "data.partitioner": "iid"})
    assert worker.local_test_rows(config, partition_id=1, num_partitions=K) == worker.test_rows(
        partition_id=1, num_partitions=K, seed=config.seed)
