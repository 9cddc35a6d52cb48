"""Before round 1: can the clients' training split be drawn for this many nodes? (issue 20)

Every client partitions the task's train pool itself (``client.worker``); a split that cannot be
drawn (a Dirichlet draw leaving some client below the minimum, more clients than rows) fails on
every client, every reply is dropped and the run would "complete" untrained. The server knows the
node count, so it draws the same split once (the partitioners are pure functions of the pool, the
seed and the node count) and refuses to start with an error that says what to change.

The same split decides whether a set ``privacy.delta`` can work (issue 16): every DP client refuses
a δ that is not below ``1/n`` for its ``n`` examples (``docs/privacy.md §3``), so the server checks
it against the largest shard before anything trains.
"""

from __future__ import annotations

import time

from flwr.serverapp import Grid

from client.tasks.partition import partition_dataset, partition_sizes
from client.tasks.setup import TaskAndModel
from contract import RunConfig

_NODE_WAIT_S = 60.0  # how long to wait for `min-train-nodes` to connect before checking what is there


class SplitError(ValueError):
    """The training split cannot be drawn for the federation's node count."""


def check_split(built: TaskAndModel, config: RunConfig, num_nodes: int) -> None:
    """Draw the clients' split of the train pool for ``num_nodes`` clients; raise :class:`SplitError`
    naming what to change when it cannot be drawn."""
    if num_nodes < 1:
        return  # nobody connected: the round loop reports that
    pool = built.task.train_pool(built.datasets, num_nodes)
    try:
        partition_dataset(
            pool, partitioner=config.data.partitioner, num_partitions=num_nodes, partition_id=0,
            alpha=config.data.alpha, seed=config.seed, label_column=built.task.label_column,
        )
    except ValueError as exc:
        raise SplitError(
            f"the training data of task {config.task.name!r} ({pool.num_rows} rows) cannot be split across "
            f"{num_nodes} clients: {exc}. Change one of: task.examples-per-client (generated tasks; now "
            f"{config.task.examples_per_client}), data.alpha (now {config.data.alpha}), "
            f"data.partitioner='iid', a larger dataset, or fewer clients"
        ) from exc


def check_delta(built: TaskAndModel, config: RunConfig, num_nodes: int) -> None:
    """Refuse a set ``privacy.delta`` that is not below ``1/n`` for the largest shard ``n`` of the split
    drawn for ``num_nodes`` clients (that client would refuse to train every round; docs/privacy.md §3).

    Raises
    ------
    SplitError
        Naming the largest shard, its bound and the fix.
    """
    delta = config.privacy.delta
    if not config.privacy.enabled or not delta or num_nodes < 1:
        return  # DP off, or the default δ = min(1e-5, 1/(10 n)) that every n meets
    sizes = partition_sizes(
        built.task.train_pool(built.datasets, num_nodes), partitioner=config.data.partitioner, num_partitions=num_nodes,
        alpha=config.data.alpha, seed=config.seed, label_column=built.task.label_column,
    )
    largest = max(sizes)
    if delta >= 1.0 / largest:
        raise SplitError(
            f"`privacy.delta` = {delta:g} is not below 1/n = {1.0 / largest:.3g} for the largest client shard "
            f"(n = {largest} examples, of {num_nodes} clients); that client would refuse to train in every round "
            f"(δ ≥ 1/n allows releasing one example outright, docs/privacy.md §3). Set `privacy.delta` below "
            f"{1.0 / largest:.3g}, or 0 for the default min(1e-5, 1/(10 n))"
        )


def federation_size(grid: Grid, config: RunConfig, *, wait_s: float = _NODE_WAIT_S) -> int:
    """The number of connected nodes once ``min-train-nodes`` are there (or after ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    count = len(list(grid.get_node_ids()))
    while count < config.min_train_nodes and time.monotonic() < deadline:
        time.sleep(1)
        count = len(list(grid.get_node_ids()))
    return count
