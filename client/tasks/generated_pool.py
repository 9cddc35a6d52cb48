"""The train pool of a task that generates its data, sized by the federation (issue 20).

A fixed pool split ever thinner leaves a Dirichlet draw nothing to give most clients at 1,000 nodes
(3,000 rows: 3 per client). A generated task instead draws ``max(num_train, examples_per_client x
num_partitions)`` rows, so up to ``num_train / examples_per_client`` clients see exactly the pool they
always saw, and beyond that every client keeps about ``examples_per_client`` rows (docs/scaling.md §6).

A grown pool is never materialised whole: at 10,000 clients it would be 500,000 rows held by the
ServerApp (split check) and by every simulation worker, although each client trains on its ~50. It
is an *index pool* instead: the columns a partitioner reads (the label) plus what a row's generator
needs (:data:`POOL_ROW`, the row's number, and any hidden generator input), built cheaply from the
seed; the rows of a client's shard are generated on demand from a random stream of their own, seeded
by ``(seed, split, row number)``. Both are pure functions of the seed and the size, so every node
derives the same index pool, the same partition (partitioners read only the label and the row count)
and the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import Dataset

POOL_ROW = "pool_row"  # column of an index pool: the row's number, the seed of its own generator


def federation_pool_size(num_train: int, examples_per_client: int, num_partitions: int) -> int:
    """Rows in the train pool for ``num_partitions`` clients."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions (the number of clients) must be >= 1, got {num_partitions}")
    return max(num_train, examples_per_client * num_partitions)


class GeneratedPool:
    """A task's train pool at any federation size: the fixed pool, or an index pool whose rows are
    generated per shard.

    Parameters
    ----------
    index : callable
        ``index(size)`` -> the index pool's columns for ``size`` rows (at least the task's label
        column); :data:`POOL_ROW` is added here.
    make_row : callable
        ``make_row(index_row)`` -> the full training row (the fixed pool's columns) for one row of the
        index pool, a pure function of it.
    """

    def __init__(self, index: Callable[[int], Dataset], make_row: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._index = index
        self._make_row = make_row
        self._pools: dict[int, Dataset] = {}

    def for_federation(self, fixed: Dataset, examples_per_client: int, num_partitions: int) -> Dataset:
        """The pool ``num_partitions`` clients partition: ``fixed`` itself while it is large enough,
        else the index pool of :func:`federation_pool_size` rows (built once per size and kept)."""
        size = federation_pool_size(fixed.num_rows, examples_per_client, num_partitions)
        if size == fixed.num_rows:
            return fixed
        if size not in self._pools:
            self._pools.clear()  # one federation per process at a time
            index = self._index(size)
            self._pools[size] = index.add_column(POOL_ROW, list(range(size)))
        return self._pools[size]

    def rows(self, shard: Dataset) -> list[dict[str, Any]]:
        """The training rows of ``shard`` (a partition of :meth:`for_federation`'s pool), in its order."""
        listed = shard.to_list()
        if POOL_ROW not in shard.column_names:
            return listed
        return [self._make_row(row) for row in listed]
