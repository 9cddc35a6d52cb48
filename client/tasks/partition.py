"""Split a task's train pool across federated clients with ``flwr-datasets`` partitioners.

* ``iid``: the pool is shuffled with ``seed`` and cut into ``num_partitions`` contiguous shards of
  equal size (+-1) by :class:`flwr_datasets.partitioner.IidPartitioner`.
* ``dirichlet``: :class:`flwr_datasets.partitioner.DirichletPartitioner` over the task's label
  column; smaller ``alpha`` means stronger label skew.

Partitions are a pure function of the dataset content and the arguments, so every process (Ray
worker, subprocess client) derives the same rows. Partitioner objects are cached per process,
keyed by the dataset fingerprint and the arguments, so serving many clients from one process
partitions the pool once.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Literal, get_args

import datasets

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PartitionerName = Literal["iid", "dirichlet"]
PARTITIONERS: tuple[str, ...] = get_args(PartitionerName)

_CACHE_SIZE = 16
_CACHE: OrderedDict[tuple[object, ...], Partitioner] = OrderedDict()
_LOCK = threading.Lock()


def default_min_partition_size(num_rows: int, num_partitions: int) -> int:
    """A twentieth of the average partition size, clipped to ``[1, 10]``.

    Small enough that 100 clients over a 3000-row pool with 5 labels and ``alpha=0.3`` succeed
    (``alpha=0.1`` then leaves some client empty in every draw and is rejected)."""
    return max(1, min(10, num_rows // (20 * num_partitions)))


def _validate(dataset: datasets.Dataset, partitioner: str, num_partitions: int, partition_id: int,
              alpha: float, label_column: str | None) -> None:
    if partitioner not in PARTITIONERS:
        raise ValueError(f"unknown data.partitioner {partitioner!r}; choose one of {', '.join(PARTITIONERS)}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions (the number of clients) must be >= 1, got {num_partitions}")
    if num_partitions > dataset.num_rows:
        raise ValueError(
            f"num_partitions={num_partitions} exceeds the {dataset.num_rows} training rows; "
            "use fewer clients or a larger train pool"
        )
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id={partition_id} is out of range [0, {num_partitions - 1}] "
                         f"for num_partitions={num_partitions}")
    if partitioner == "dirichlet":
        if label_column is None:
            raise ValueError("data.partitioner='dirichlet' needs a label column, but this task has "
                             "none (label_column=None); use data.partitioner=iid")
        if label_column not in dataset.column_names:
            raise ValueError(f"label column {label_column!r} (used by data.partitioner='dirichlet') "
                             f"is not a dataset column; columns: {dataset.column_names}")
        if not alpha > 0:
            raise ValueError(f"data.alpha must be > 0 for data.partitioner='dirichlet', got {alpha}")


def _build(dataset: datasets.Dataset, partitioner: str, num_partitions: int, alpha: float, seed: int,
           label_column: str | None, min_partition_size: int) -> Partitioner:
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner  # ~2 s import

    part: Partitioner
    if partitioner == "iid":
        part = IidPartitioner(num_partitions=num_partitions)
        part.dataset = dataset.shuffle(seed=seed, keep_in_memory=True)
    else:
        assert label_column is not None
        part = DirichletPartitioner(num_partitions=num_partitions, partition_by=label_column,
                                    alpha=float(alpha), min_partition_size=min_partition_size,
                                    self_balancing=False, shuffle=True, seed=seed)
        part.dataset = dataset
    return part


def partition_dataset(
    dataset: datasets.Dataset,
    *,
    partitioner: PartitionerName,
    num_partitions: int,
    partition_id: int,
    alpha: float,
    seed: int,
    label_column: str | None,
    min_partition_size: int | None = None,
) -> datasets.Dataset:
    """Rows of ``dataset`` that belong to client ``partition_id``.

    Parameters
    ----------
    dataset : datasets.Dataset
        The task's train pool.
    partitioner : {"iid", "dirichlet"}
        ``data.partitioner`` from the run config.
    num_partitions : int
        Number of clients the pool is split across.
    partition_id : int
        This client's partition, in ``[0, num_partitions)``.
    alpha : float
        Dirichlet concentration (``data.alpha``); ignored by ``iid``.
    seed : int
        Seed of the shuffle (iid) or of the Dirichlet draws.
    label_column : str or None
        The task's ``label_column``; required by ``dirichlet``.
    min_partition_size : int, optional
        Dirichlet only: redraw (at most 10 times) until every partition has this many rows.
        Defaults to :func:`default_min_partition_size`.

    Returns
    -------
    datasets.Dataset
        The partition. Partitions are disjoint and together cover ``dataset`` exactly once.

    Raises
    ------
    ValueError
        On an unknown partitioner, an out-of-range ``partition_id``, ``dirichlet`` without a label
        column or with ``alpha <= 0``, or when no Dirichlet draw meets ``min_partition_size``.
    """
    _validate(dataset, partitioner, num_partitions, partition_id, alpha, label_column)
    if min_partition_size is None:
        min_partition_size = default_min_partition_size(dataset.num_rows, num_partitions)
    fingerprint = getattr(dataset, "_fingerprint", None)  # a content hash for in-memory datasets
    key: tuple[object, ...] = (fingerprint, dataset.num_rows, partitioner, num_partitions, seed)
    if partitioner == "dirichlet":
        key += (float(alpha), label_column, min_partition_size)
    with _LOCK:
        part = _CACHE.get(key) if fingerprint else None
        if part is None:
            part = _build(dataset, partitioner, num_partitions, alpha, seed, label_column, min_partition_size)
            if fingerprint:  # without one there is nothing safe to key on: no caching
                _CACHE[key] = part
                while len(_CACHE) > _CACHE_SIZE:
                    _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
        try:
            with warnings.catch_warnings():  # flwr warns on every Dirichlet redraw; we explain failure
                warnings.filterwarnings("ignore", message="The specified min_partition_size")
                return part.load_partition(partition_id)
        except ValueError as err:
            _CACHE.pop(key, None)
            if "max number of attempts" in str(err):
                raise ValueError(
                    f"data.partitioner='dirichlet' could not give each of {num_partitions} clients "
                    f"at least {min_partition_size} rows with data.alpha={alpha}; raise data.alpha or "
                    "use fewer clients"
                ) from err
            raise


def partition_sizes(
    dataset: datasets.Dataset,
    *,
    partitioner: PartitionerName,
    num_partitions: int,
    alpha: float,
    seed: int,
    label_column: str | None,
) -> list[int]:
    """The number of rows of every client's partition, in partition order (the same draw as
    :func:`partition_dataset`, from the same cached partitioner: each partition is an index view).

    Raises
    ------
    ValueError
        As :func:`partition_dataset`.
    """
    return [
        partition_dataset(
            dataset, partitioner=partitioner, num_partitions=num_partitions, partition_id=pid, alpha=alpha, seed=seed,
            label_column=label_column,
        ).num_rows
        for pid in range(num_partitions)
    ]


def clear_partition_cache() -> None:
    """Drop all cached partitioners (tests; or to free memory after a run)."""
    with _LOCK:
        _CACHE.clear()
