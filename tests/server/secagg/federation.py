"""A small in-process federation for SecAgg tests: FakeGrid -> a ClientApp with the real SecAgg
handlers and a stub train handler whose updates, example counts and losses the test knows.

``faults`` makes chosen nodes fail (raise) or go silent (no reply) at chosen stages; ``tamper``
rewrites a node's reply after the real handler built it (a malformed or hostile client).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.secagg import register_secagg
from contract import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, PARTITION_ID, SERVER_ROUND, TRAIN_LOSS
from contract.secagg import SecAggConfig
from server.metering import ByteLedger
from server.secagg import SecAggDriver, SecAggOutcome
from tests.strategies.fake_grid import FakeGrid

Tamper = Callable[[Message], None]


class SilentGrid(FakeGrid):
    """A FakeGrid whose ``silent`` (node, message type) pairs never reply (as on a timeout)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.silent: set[tuple[int, str]] = set()
        self.sent_types: dict[str, str] = {}

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        messages = list(messages)
        ids = list(super().push_messages(messages))
        for msg, msg_id in zip(messages, ids, strict=True):
            if (msg.metadata.dst_node_id, msg.metadata.message_type) in self.silent:
                self._replies.pop(msg_id, None)
        return ids


@dataclass
class Federation:
    """``k`` clients with known updates ``u_i``, example counts ``n_i`` and losses."""

    k: int = 5
    seed: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"r": (4, 4), "head": (3,)})
    scale: float = 0.1
    fail: set[tuple[int, str]] = field(default_factory=set)  # (partition, message type): the handler raises
    tamper: dict[tuple[int, str], Tamper] = field(default_factory=dict)  # (partition, type): rewrite reply

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.global_arrays = {k: rng.normal(size=s).astype(np.float32) for k, s in self.shapes.items()}
        self.updates = {p: {k: rng.normal(scale=self.scale, size=s) for k, s in self.shapes.items()} for p in range(self.k)}
        self.num_examples = {p: int(rng.integers(5, 60)) for p in range(self.k)}
        self.losses = {p: float(rng.uniform(0.5, 3.0)) for p in range(self.k)}
        self.app = ClientApp()
        register_secagg(self.app, self._train)
        self.grid = SilentGrid(self._handle, self.k)
        self.ledger = ByteLedger()

    def node(self, partition: int) -> int:
        """The node id of ``partition``."""
        return self.grid.node_ids[partition]

    def payload(self, partition: int, received: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What ``partition`` sends back without SecAgg: received + its update, as float32."""
        return {k: (received[k].astype(np.float64) + self.updates[partition][k]).astype(np.float32) for k in received}

    def _train(self, msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        received = {k: a.numpy() for k, a in msg.content[ARRAYS].items()}
        metrics = {NUM_EXAMPLES: self.num_examples[partition], TRAIN_LOSS: self.losses[partition],
                   PARTITION_ID: partition, "frozen-hash-ok": 1}
        content = RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in self.payload(partition, received).items()}),
                              METRICS: MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    def _handle(self, msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        kind = msg.metadata.message_type
        if (partition, kind) in self.fail:
            raise RuntimeError(f"injected failure of partition {partition} at {kind}")
        reply = self.app(msg, context)
        if (partition, kind) in self.tamper:
            self.tamper[(partition, kind)](reply)
        return reply

    def train_messages(self, server_round: int = 1) -> list[Message]:
        """The round's train instructions, as a strategy builds them."""
        return [
            Message(
                content=RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in self.global_arrays.items()}),
                                    CONFIG: ConfigRecord({SERVER_ROUND: server_round})}),
                dst_node_id=node,
                message_type="train",
            )
            for node in self.grid.node_ids
        ]

    def run(self, config: SecAggConfig | None = None, *, weighted: bool = True, server_round: int = 1) -> SecAggOutcome:
        """One SecAgg round over every client."""
        config = config or SecAggConfig(enabled=True)
        driver = SecAggDriver(config, self.ledger, weighted=weighted)
        return driver.run_round(self.grid, server_round, self.train_messages(server_round))

    def plain_sums(self, partitions: list[int], *, weighted: bool = True, max_weight: int = 10000) -> tuple[int, dict[str, np.ndarray], float]:
        """``(Σ w_i, Σ w_i·u_i, Σ w_i·loss_i)`` over ``partitions``, computed in the clear, where
        ``u_i`` is what the client's float32 payload minus the float32 global array really is."""
        weights = {p: min(self.num_examples[p], max_weight) if weighted else 1 for p in partitions}
        sums = {}
        for key, glob in self.global_arrays.items():
            sums[key] = sum(
                weights[p] * (self.payload(p, self.global_arrays)[key].astype(np.float64) - glob.astype(np.float64))
                for p in partitions
            )
        return sum(weights.values()), sums, sum(weights[p] * self.losses[p] for p in partitions)
