"""The train pool of a task that generates its data, sized by the federation (issue 20).

A fixed pool split ever thinner leaves a Dirichlet draw nothing to give most clients at 1,000 nodes
(3,000 rows: 3 per client). A generated task instead draws ``max(num_train, examples_per_client x
num_partitions)`` rows, so up to ``num_train / examples_per_client`` clients see exactly the pool they
always saw, and beyond that every client keeps about ``examples_per_client`` rows (docs/scaling.md).
The pool is a pure function of the seed and its size, so every node derives the same rows.
"""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset


def federation_pool_size(num_train: int, examples_per_client: int, num_partitions: int) -> int:
    """Rows in the train pool for ``num_partitions`` clients."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions (the number of clients) must be >= 1, got {num_partitions}")
    return max(num_train, examples_per_client * num_partitions)


class GeneratedPool:
    """The grown pools of one task, built on first use and kept (one size per federation)."""

    def __init__(self, generate: Callable[[int], Dataset]) -> None:
        self._generate = generate
        self._pools: dict[int, Dataset] = {}

    def get(self, fixed: Dataset, size: int) -> Dataset:
        """``fixed`` when it already has ``size`` rows, else the generated pool of ``size`` rows."""
        if size == fixed.num_rows:
            return fixed
        if size not in self._pools:
            self._pools.clear()  # one federation per process at a time
            self._pools[size] = self._generate(size)
        return self._pools[size]
