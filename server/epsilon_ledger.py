"""The server's per-node ε ledger: ε is recorded for every node that may have trained, never understated.

Clients report their cumulative ε in train replies (``docs/privacy.md §7``). A reply can fail to
arrive (``round-timeout``), be dropped (malformed, a NaN ε) or be an error after the node trained,
and the ε that node spent is then missing from a max over the replies. The ledger keeps, per node:

- ``reported``: the largest ε it reported in an accepted reply;
- ``rounds``: the train rounds it was instructed in and did not refuse before training (the error
  codes of ``contract.NOT_TRAINED``: budget exhausted, history missing, state missing);
- ``unreported``: how many of those came after its last accepted report;
- ``partition``: the data partition its accepted replies named.

A node with ``unreported > 0`` is **charged** ``max(reported, ε_bound)``, where ``ε_bound`` is the ε
of ``rounds`` full rounds computed by the server with the clients' own accountant
(:class:`server.epsilon_bound.EpsilonBound`): the node's history cannot hold more steps than that.
Otherwise its ε is what it reported (its history then covers every round it trained in). The round
row's ``epsilon`` is the max over all nodes so far (``docs/privacy.md §10``): monotone in the rounds,
and independent of which clients were sampled last.

The ledger also tells the driver what to send each node (``EPSILON_SPENT``: its ``reported``), by
which a restarted node that lost its history refuses to train (``client.privacy_history``). Its
state is plain JSON for the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

from contract import CONFIG, EPSILON, EPSILON_SPENT, METRICS, NOT_TRAINED, PARTITION_ID

Bound = Callable[[int | None, int], float]
"""``(partition or None for unknown, rounds) -> ε`` after that many full rounds (the server's bound)."""


@dataclass
class NodeEpsilon:
    """What the server knows of one node's ε (module docstring)."""

    reported: float = 0.0
    rounds: int = 0
    unreported: int = 0
    partition: int | None = None

    def charged(self, bound: Bound) -> float:
        """ε this node is charged: its report, or the server's bound when rounds are unreported."""
        if self.unreported <= 0:
            return self.reported
        return max(self.reported, bound(self.partition, self.rounds))


def _valid_epsilon(reply: Message) -> float | None:
    if not (reply.has_content() and METRICS in reply.content.metric_records):
        return None
    value = reply.content.metric_records[METRICS].get(EPSILON)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _partition(reply: Message, num_partitions: int) -> int | None:
    value = reply.content.metric_records[METRICS].get(PARTITION_ID)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < num_partitions:
        return value
    return None


class EpsilonLedger:
    """Per-node ε bookkeeping of a DP run; ``bound`` is the server's accountant (module docstring)."""

    def __init__(self, bound: Bound, *, num_partitions: int, nodes: Mapping[int, NodeEpsilon] | None = None) -> None:
        self.bound = bound
        self.num_partitions = num_partitions
        self.nodes: dict[int, NodeEpsilon] = dict(nodes or {})

    # --- a round ----------------------------------------------------------------------------------
    def stamp(self, messages: Iterable[Message]) -> list[Message]:
        """Each train message with ``EPSILON_SPENT`` = the ε its node last reported (0.0 if never).

        The strategy's messages may share one content; each gets its own. ``EPSILON_SPENT`` is in
        the round's train config already (0.0), so the value changes and the metered size does not.
        """
        out = []
        for message in messages:
            node = self.nodes.get(message.metadata.dst_node_id)
            content = RecordDict(dict(message.content.items()))
            config = dict(message.content.config_records[CONFIG])
            config[EPSILON_SPENT] = float(node.reported if node is not None else 0.0)
            content[CONFIG] = ConfigRecord(config)
            message.content = content
            out.append(message)
        return out

    def instructed(self, node_ids: Iterable[int]) -> None:
        """These nodes were sent a train instruction this round: each may spend a round's ε."""
        for node_id in node_ids:
            node = self.nodes.setdefault(int(node_id), NodeEpsilon())
            node.rounds += 1
            node.unreported += 1

    def settle(self, replies: Iterable[Message], *, dropped: set[int]) -> None:
        """Book this round's final train replies; ``dropped``: nodes whose reply the strategy refused.

        A node without a reply here (timed out) keeps its round unreported.
        """
        for reply in replies:
            node = self.nodes.get(int(reply.metadata.src_node_id))
            if node is None:  # a reply to no instruction of this ledger: nothing to book
                continue
            if reply.has_error() and reply.error.code in NOT_TRAINED:
                node.rounds -= 1  # refused before its first DP-SGD step: spent nothing
                node.unreported -= 1
                continue
            epsilon = _valid_epsilon(reply)
            if epsilon is None or reply.metadata.src_node_id in dropped:
                continue  # trained (perhaps), but the server cannot take its word: stays charged
            node.reported = max(node.reported, epsilon)
            node.unreported = 0
            node.partition = _partition(reply, self.num_partitions)

    # --- what is recorded -------------------------------------------------------------------------
    def epsilon(self) -> float:
        """The max over nodes of the ε each is charged (0.0 before any node trained)."""
        return max((node.charged(self.bound) for node in self.nodes.values()), default=0.0)

    def bounded_nodes(self) -> int:
        """How many nodes are charged the server's bound rather than their own report."""
        return sum(1 for node in self.nodes.values() if node.unreported > 0)

    def table(self) -> list[dict[str, Any]]:
        """One entry per node for ``summary.json``: its report, rounds and the ε it is charged."""
        return [
            {"node": node_id, **asdict(node), "charged": node.charged(self.bound)}
            for node_id, node in sorted(self.nodes.items())
        ]

    # --- checkpoint -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain JSON (node ids as strings: JSON object keys)."""
        return {str(node_id): asdict(node) for node_id, node in self.nodes.items()}

    @staticmethod
    def nodes_from_state(state: Mapping[str, Any]) -> dict[int, NodeEpsilon]:
        """Inverse of :meth:`state`; raises ``ValueError`` naming a malformed entry."""
        nodes = {}
        for key, entry in state.items():
            try:
                node = NodeEpsilon(**entry)
                ok = (
                    math.isfinite(node.reported) and node.reported >= 0
                    and isinstance(node.rounds, int) and isinstance(node.unreported, int)
                    and 0 <= node.unreported <= node.rounds
                    and (node.partition is None or isinstance(node.partition, int))
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(f"ε ledger entry for node {key!r} is malformed: {exc}") from exc
            if not ok:
                raise ValueError(f"ε ledger entry for node {key!r} is malformed: {entry!r}")
            nodes[int(key)] = node
        return nodes
