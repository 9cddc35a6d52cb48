"""The server's own ε for a node after ``k`` full rounds, computed exactly as the client computes it.

Everything a client's accountant depends on is known to the server from the run config and the data:
the partition size ``n`` (the server draws the same split the clients draw, ``server.split_check``),
hence the sample rate ``q = 1 / ceil(n / min(batch, n))`` and the default δ; σ (given, or calibrated
by the same deterministic search over the same planned steps); and ``train.local-steps`` per round.
A client's history after ``k`` rounds is ``k`` entries ``(σ, q, steps)``, merged to one, so the
server's ε is the client's, bit for bit (``privacy.engine.privatize`` and ``privacy.accounting``
are the very functions the client uses). A node that cannot have taken more than ``k`` rounds has
spent at most this ε (``docs/privacy.md §10``).
"""

from __future__ import annotations

from functools import cache

from client.tasks.partition import partition_dataset
from client.tasks.setup import TaskAndModel
from contract import RunConfig
from privacy import DPConfig, epsilon_of, resolve_noise, sample_rate_for


class EpsilonBound:
    """``bound(partition, rounds)``: ε of ``rounds`` full rounds on that partition (``None``: the max over
    all partitions, for a node whose partition the server does not know)."""

    def __init__(self, config: RunConfig, built: TaskAndModel, num_partitions: int) -> None:
        self.config = config
        self.built = built
        self.num_partitions = num_partitions
        self.dp = DPConfig.from_values(config.privacy.model_dump(by_alias=True))
        self._size = cache(self._partition_size)
        self._epsilon = cache(self._partition_epsilon)

    def __call__(self, partition: int | None, rounds: int) -> float:
        if rounds <= 0:
            return 0.0
        partitions = range(self.num_partitions) if partition is None else (partition,)
        return max(self._epsilon(p, rounds) for p in partitions)

    def _partition_size(self, partition: int) -> int:
        """``n`` of that client's shard, drawn as ``client.worker.Worker.train_rows`` draws it."""
        shard = partition_dataset(
            self.built.task.train_pool(self.built.datasets, self.num_partitions),
            partitioner=self.config.data.partitioner,
            num_partitions=self.num_partitions,
            partition_id=partition,
            alpha=self.config.data.alpha,
            seed=self.config.seed,
            label_column=self.built.task.label_column,
        )
        return int(shard.num_rows)

    def _partition_epsilon(self, partition: int, rounds: int) -> float:
        n = self._size(partition)
        steps = self.config.train.local_steps
        rate = sample_rate_for(n, batch_size=self.config.train.batch_size)
        delta = self.dp.delta_for(n)
        noise = resolve_noise(
            self.dp, delta=delta, sample_rate=rate, steps=steps, planned_rounds=self.config.num_server_rounds
        )
        return epsilon_of([(noise, rate, rounds * steps)], mechanism=self.dp.accountant, delta=delta)
