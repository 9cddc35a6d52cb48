"""Generated tasks grow their train pool with the federation (task.examples-per-client, issue 20)."""

from __future__ import annotations

from typing import Any

import pytest

from client.tasks.arithmetic import ArithmeticWordProblems, generate_split, grown_kinds
from client.tasks.generated_pool import POOL_ROW, federation_pool_size
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


@pytest.mark.parametrize(("task_cls", "text_column"), [(ArithmeticWordProblems, "question"), (TopicClassification, "text")])
def test_a_grown_pool_holds_no_text_and_generates_each_shard_on_demand(task_cls: type, text_column: str) -> None:
    task = _configured(task_cls)
    datasets = task.build_datasets()
    pool = task.train_pool(datasets, 1000)
    assert POOL_ROW in pool.column_names and text_column not in pool.column_names  # labels and row numbers only
    shard = partition_dataset(pool, partitioner="dirichlet", num_partitions=1000, partition_id=7, alpha=0.5, seed=0,
                              label_column=task.label_column)
    rows = task.pool_rows(shard)
    assert len(rows) == shard.num_rows >= 1
    assert all(set(row) == set(datasets["train"].column_names) for row in rows)  # the fixed pool's columns
    assert [row[task.label_column] for row in rows] == shard[task.label_column]  # the label it was partitioned by
    # the same rows in another process (a fresh task, other shards generated first), other rows for another seed
    other = _configured(task_cls)
    other.pool_rows(partition_dataset(other.train_pool(other.build_datasets(), 1000), partitioner="iid",
                                      num_partitions=1000, partition_id=3, alpha=0.5, seed=0, label_column=None))
    again = partition_dataset(other.train_pool(other.build_datasets(), 1000), partitioner="dirichlet",
                              num_partitions=1000, partition_id=7, alpha=0.5, seed=0, label_column=task.label_column)
    assert other.pool_rows(again) == rows
    reseeded = task_cls(seed=1, max_length=64)
    reseeded.configure(parse_run_config({"task.name": task_cls.name}))
    assert reseeded.pool_rows(shard) != rows
    assert len({row[text_column] for row in rows}) > len(rows) // 2  # generated texts, not one repeated


def test_grown_arithmetic_rows_are_well_formed_problems_of_their_kind() -> None:
    task = _configured(ArithmeticWordProblems)
    pool = task.train_pool(task.build_datasets(), 200)  # 10,000 rows
    rows = task.pool_rows(pool.select(range(0, 10_000, 97)))
    for row in rows:
        assert row["question"].endswith("?") and int(row["answer"]) == int(row["answer"].strip())
    kinds = pool["kind"]
    assert max(kinds.count(k) for k in range(6)) - min(kinds.count(k) for k in range(6)) <= 1  # balanced


def test_grown_topics_labels_carry_the_configured_noise() -> None:
    task = TopicClassification(seed=0, max_length=64, p_label_noise=0.2)
    task.configure(parse_run_config({"task.name": "topics"}))
    pool = task.train_pool(task.build_datasets(), 1000)  # 50,000 rows
    noisy = sum(label != topic for label, topic in zip(pool["label"], pool["topic"], strict=True)) / pool.num_rows
    assert 0.19 < noisy < 0.21


def test_the_fixed_pool_gives_its_own_rows() -> None:
    task = _configured(ArithmeticWordProblems)
    datasets = task.build_datasets()
    shard = partition_dataset(task.train_pool(datasets, 10), partitioner="iid", num_partitions=10, partition_id=2,
                              alpha=0.5, seed=0, label_column=None)
    assert task.pool_rows(shard) == shard.to_list()


def test_grown_arithmetic_kinds_are_the_full_pools_so_every_split_is_unchanged() -> None:
    for size in (7, 3050):
        assert grown_kinds(3, "train", size) == generate_split(3, "train", size)["kind"]
