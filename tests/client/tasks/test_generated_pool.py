"""Generated tasks grow their train pool with the federation (task.examples-per-client, issue 20)."""

from __future__ import annotations

from typing import Any

import pytest

from client.tasks.arithmetic import ArithmeticWordProblems
from client.tasks.generated_pool import federation_pool_size
from client.tasks.partition import partition_dataset
from client.tasks.topics import TopicClassification
from contract import parse_run_config


def _configured(task_cls: type[ArithmeticWordProblems] | type[TopicClassification], **flat: Any) -> Any:
    task = task_cls(seed=0, max_length=64)
    task.configure(parse_run_config({"task.name": task_cls.name, **flat}))
    return task


def test_pool_size_is_the_fixed_pool_until_clients_times_examples_exceed_it() -> None:
    assert federation_pool_size(3000, 50, 10) == 3000
    assert federation_pool_size(3000, 50, 60) == 3000
    assert federation_pool_size(3000, 50, 61) == 3050
    assert federation_pool_size(3000, 50, 1000) == 50_000
    assert federation_pool_size(3000, 0, 1000) == 3000
    with pytest.raises(ValueError, match="num_partitions"):
        federation_pool_size(3000, 50, 0)


@pytest.mark.parametrize("task_cls", [ArithmeticWordProblems, TopicClassification])
def test_small_federations_keep_the_fixed_pool_itself(task_cls: type) -> None:
    task = _configured(task_cls)
    datasets = task.build_datasets()
    assert task.train_pool(datasets, 10) is datasets["train"]


def test_default_dirichlet_split_gives_every_one_of_1000_clients_rows() -> None:
    task = _configured(ArithmeticWordProblems)  # defaults: dirichlet, alpha 0.5, 50 examples per client
    pool = task.train_pool(task.build_datasets(), 1000)
    assert pool.num_rows == 50_000
    assert task.train_pool(task.build_datasets(), 1000) is pool  # generated once per federation size
    sizes = [
        partition_dataset(pool, partitioner="dirichlet", num_partitions=1000, partition_id=pid, alpha=0.5,
                          seed=0, label_column=task.label_column).num_rows
        for pid in (0, 1, 500, 998, 999)
    ]
    assert min(sizes) >= 1
    assert sum(sizes) < pool.num_rows  # disjoint shares, not the whole pool each


def test_the_fixed_pool_alone_cannot_be_split_across_1000_clients() -> None:
    task = _configured(ArithmeticWordProblems, **{"task.examples-per-client": 0})
    pool = task.train_pool(task.build_datasets(), 1000)
    assert pool.num_rows == 3000
    with pytest.raises(ValueError, match="could not give each of 1000 clients"):
        partition_dataset(pool, partitioner="dirichlet", num_partitions=1000, partition_id=0, alpha=0.5,
                          seed=0, label_column=task.label_column)
