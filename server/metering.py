"""Communication metering: bytes per round, per client, per direction, from the serialised records.

``Metered`` wraps the :class:`server.exactness_audit.Audited` layer (a wrapper, not a flag in each
strategy; plugin reports and broadcasts are metered too, and payloads in their wire dtype) and records, for every message sent and
every reply received, the size of the records it carries
(``Record.count_bytes()``: the npy-serialised arrays plus key and metadata bytes). Flower adds no
compression, so these are the payload bytes on the wire; the simulation's message envelope adds
about 1.5 KB. A deployed SuperLink's own traffic counter also counts each array's framing (about
0.5 KB per array); ``tests/docker`` checks the ledger against it within 5%.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from contract import SETUP_RECORDS, message_bytes
from server.exactness_audit import Audited
from server.strategy_wrapper import StrategyWrapper

DOWN, UP = "down", "up"
SETUP = "setup"  # the phase of one-time set-up records


@dataclass(frozen=True)
class LedgerRow:
    """One message: the round, the node, ``down`` (server to client) or ``up``, and its bytes."""

    round: int
    node: int
    direction: str
    phase: str
    bytes: int


@dataclass
class ByteLedger:
    """All metered messages of a run, appended as they happen."""

    rows: list[LedgerRow] = field(default_factory=list)

    def add(self, *, server_round: int, node: int, direction: str, phase: str, nbytes: int) -> None:
        """Record one message."""
        self.rows.append(LedgerRow(server_round, node, direction, phase, nbytes))

    def total(
        self, *, server_round: int | None = None, direction: str | None = None, phase: str | None = None
    ) -> int:
        """Sum of bytes, optionally for one round, one direction and/or one phase."""
        return sum(
            r.bytes
            for r in self.rows
            if (server_round is None or r.round == server_round)
            and (direction is None or r.direction == direction)
            and (phase is None or r.phase == phase)
        )

    def write_csv(self, path: Path) -> None:
        """``round,node,direction,phase,bytes``, one line per message."""
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["round", "node", "direction", "phase", "bytes"])
            writer.writerows((r.round, r.node, r.direction, r.phase, r.bytes) for r in self.rows)


class Metered(StrategyWrapper[Audited]):
    """Wrap the audit layer so that every message in both directions is entered in ``ledger``.

    The wrapper delegates all decisions inwards; ``start`` is Flower's own round loop calling these
    methods. ``train_metrics`` and ``evaluate_metrics`` keep each round's aggregated metrics for the
    run recorder.
    """

    wraps = Audited

    def __init__(self, audited: Audited, ledger: ByteLedger) -> None:
        super().__init__(audited)
        self.ledger = ledger
        self.train_metrics: dict[int, MetricRecord] = {}
        self.evaluate_metrics: dict[int, MetricRecord] = {}

    def meter(self, messages: Iterable[Message], *, server_round: int, direction: str, phase: str) -> list[Message]:
        """Enter ``messages`` in the ledger (also for the round driver's resends); returns them as a list."""
        messages = list(messages)
        for msg in messages:
            node = msg.metadata.dst_node_id if direction == DOWN else msg.metadata.src_node_id
            total = message_bytes(msg)
            setup = sum(msg.content[k].count_bytes() for k in SETUP_RECORDS if k in msg.content)
            if setup:  # one-time records (Fed-SB's B and A) are booked apart from per-round traffic
                self.ledger.add(server_round=server_round, node=node, direction=direction, phase=SETUP, nbytes=setup)
            self.ledger.add(server_round=server_round, node=node, direction=direction, phase=phase, nbytes=total - setup)
        return messages

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate, then meter what goes down."""
        out = self.inner.configure_train(server_round, arrays, config, grid)
        return self.meter(out, server_round=server_round, direction=DOWN, phase="train")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Meter what came up (every reply, valid or not), then delegate."""
        replies = [r for r in replies]
        self.meter([r for r in replies if r.has_content()], server_round=server_round, direction=UP, phase="train")
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if metrics is not None:
            self.train_metrics[server_round] = metrics
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate, then meter what goes down."""
        out = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return self.meter(out, server_round=server_round, direction=DOWN, phase="evaluate")

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Meter what came up, then delegate."""
        replies = [r for r in replies]
        self.meter([r for r in replies if r.has_content()], server_round=server_round, direction=UP, phase="evaluate")
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        if metrics is not None:
            self.evaluate_metrics[server_round] = metrics
        return metrics
