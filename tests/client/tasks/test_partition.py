"""Partitioning a task's train pool across clients (flwr-datasets IID / Dirichlet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.tasks import ArithmeticWordProblems, TopicClassification, partition
from client.tasks import clear_partition_cache, partition_dataset

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pool():
    train = TopicClassification(seed=0, max_length=64).build_datasets()["train"]
    return train.add_column("row_id", list(range(train.num_rows)))


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_partition_cache()
    yield
    clear_partition_cache()


def _parts(ds, **kw) -> list:
    n = kw["num_partitions"]
    return [partition_dataset(ds, partition_id=i, **kw) for i in range(n)]


DIRICHLET = dict(partitioner="dirichlet", num_partitions=10, alpha=0.3, seed=42, label_column="label")
IID = dict(partitioner="iid", num_partitions=10, alpha=0.3, seed=42, label_column="label")


def _total_variation(parts, global_labels) -> list[float]:
    g = np.bincount(global_labels, minlength=5) / len(global_labels)
    tvs = []
    for p in parts:
        y = np.asarray(p["label"])
        tvs.append(0.5 * np.abs(np.bincount(y, minlength=5) / len(y) - g).sum())
    return tvs


def test_dirichlet_covers_every_row_once(pool):
    parts = _parts(pool, **DIRICHLET)
    ids = [i for p in parts for i in p["row_id"]]
    assert len(ids) == pool.num_rows
    assert sorted(ids) == list(range(pool.num_rows))
    assert min(p.num_rows for p in parts) >= 1


def test_dirichlet_label_skew(pool):
    tvs = _total_variation(_parts(pool, **DIRICHLET), pool["label"])
    assert np.mean(tvs) > 0.25, tvs  # measured ~0.4 at alpha=0.3
    iid_tvs = _total_variation(_parts(pool, **IID), pool["label"])
    assert np.mean(iid_tvs) < 0.08, iid_tvs
    mild = _total_variation(_parts(pool, **{**DIRICHLET, "alpha": 100.0}), pool["label"])
    assert np.mean(mild) < np.mean(tvs) / 2


def test_iid_balanced_and_shuffled(pool):
    parts = _parts(pool, **IID)
    sizes = [p.num_rows for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == pool.num_rows
    ids = [i for p in parts for i in p["row_id"]]
    assert sorted(ids) == list(range(pool.num_rows))
    assert list(parts[0]["row_id"]) != list(range(300))  # shuffled, not the first contiguous rows


def test_same_seed_same_rows_other_seed_differs(pool):
    first = list(partition_dataset(pool, partition_id=3, **DIRICHLET)["row_id"])
    clear_partition_cache()
    again = list(partition_dataset(pool, partition_id=3, **DIRICHLET)["row_id"])
    assert first == again
    other = list(partition_dataset(pool, partition_id=3, **{**DIRICHLET, "seed": 7})["row_id"])
    assert other != first
    iid = list(partition_dataset(pool, partition_id=3, **IID)["row_id"])
    iid_other = list(partition_dataset(pool, partition_id=3, **{**IID, "seed": 7})["row_id"])
    assert iid != iid_other


_CHILD = """
import json
from client.tasks import TopicClassification, partition_dataset
train = TopicClassification(seed=0, max_length=64).build_datasets()["train"]
pool = train.add_column("row_id", list(range(train.num_rows)))
kw = dict(num_partitions=10, alpha=0.3, seed=42, label_column="label")
print(json.dumps({p: list(partition_dataset(pool, partitioner=p, partition_id=3, **kw)["row_id"])
                  for p in ("dirichlet", "iid")}))
"""


def test_same_rows_in_a_fresh_process(pool):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["dirichlet"] == list(partition_dataset(pool, partition_id=3, **DIRICHLET)["row_id"])
    assert child["iid"] == list(partition_dataset(pool, partition_id=3, **IID)["row_id"])


def test_partitioner_cached_per_dataset_and_args(pool):
    for i in range(10):
        partition_dataset(pool, partition_id=i, **DIRICHLET)
    assert len(partition._CACHE) == 1
    cached = next(iter(partition._CACHE.values()))
    # a content-identical rebuild of the pool hits the same entry (fingerprints are content hashes)
    rebuilt = TopicClassification(seed=0, max_length=64).build_datasets()["train"]
    rebuilt = rebuilt.add_column("row_id", list(range(rebuilt.num_rows)))
    partition_dataset(rebuilt, partition_id=0, **DIRICHLET)
    assert len(partition._CACHE) == 1 and next(iter(partition._CACHE.values())) is cached
    partition_dataset(pool, partition_id=0, **{**DIRICHLET, "alpha": 1.0})
    assert len(partition._CACHE) == 2


def test_hundred_clients(pool):
    parts = _parts(pool, **{**DIRICHLET, "num_partitions": 100})
    assert sum(p.num_rows for p in parts) == pool.num_rows and min(p.num_rows for p in parts) >= 1
    sizes = [p.num_rows for p in _parts(pool, **{**IID, "num_partitions": 100})]
    assert set(sizes) == {30}


def test_arithmetic_dirichlet_by_kind():
    train = ArithmeticWordProblems(seed=0, max_length=128).build_datasets()["train"]
    kw = dict(partitioner="dirichlet", num_partitions=5, alpha=0.2, seed=0, label_column="kind")
    parts = _parts(train, **kw)
    assert sum(p.num_rows for p in parts) == train.num_rows
    dominant = [np.bincount(p["kind"], minlength=6).max() / p.num_rows for p in parts]
    assert np.mean(dominant) > 0.4  # uniform would be 1/6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"partitioner": "pathological"}, r"unknown data\.partitioner 'pathological'"),
        ({"partition_id": 10}, r"partition_id=10 is out of range \[0, 9\]"),
        ({"partition_id": -1}, r"partition_id=-1 is out of range"),
        ({"num_partitions": 0, "partition_id": 0}, r"num_partitions"),
        ({"num_partitions": 5000, "partition_id": 0}, r"exceeds the 3000 training rows"),
        ({"label_column": None}, r"use data\.partitioner=iid"),
        ({"label_column": "topic"}, r"label column 'topic'"),
        ({"alpha": 0.0}, r"data\.alpha must be > 0"),
    ],
)
def test_bad_input(pool, overrides, message):
    kw = {**DIRICHLET, "partition_id": 0, **overrides}
    with pytest.raises(ValueError, match=message):
        partition_dataset(pool, **kw)


def test_iid_needs_no_label_column(pool):
    part = partition_dataset(pool, partition_id=0, **{**IID, "label_column": None})
    assert part.num_rows == 300


def test_infeasible_dirichlet_is_explained(pool):
    with pytest.raises(ValueError, match=r"raise data\.alpha or use fewer clients"):
        partition_dataset(pool, partition_id=0, **{**DIRICHLET, "num_partitions": 100, "alpha": 0.05})
    assert not partition._CACHE
