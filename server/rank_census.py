"""The rank census: which LoRA rank every node trains, asked once per node (``docs/algorithms.md §18``).

With ``adapter.ranks`` set, a node's rank is decided on the node (its partition id round-robin over the
list, or its node-config ``adapter-rank``), so the server asks: one small :data:`~contract.ranks.RANK_QUERY`
message per node it has not asked yet, answered with the node's partition id and rank. It runs before
round 1 for the nodes connected then, and before every round for nodes that joined since. Both ways
are metered in the ledger as ``setup`` traffic of that round. A node that does not answer, or answers
with a rank outside ``adapter.ranks``, is logged and not sent training (the strategy leaves unknown
nodes out).
"""

from __future__ import annotations

from logging import WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from contract import CONFIG, METRICS, message_bytes
from contract.ranks import ADAPTER_RANK, RANK_QUERY
from server.metering import DOWN, SETUP, UP, ByteLedger
from strategies.client_ranks import ClientRanks


class RankCensus:
    """Fills ``ranks.by_node`` for every node of the grid it has not asked yet."""

    def __init__(self, ranks: ClientRanks, ledger: ByteLedger, *, timeout: float = 600.0) -> None:
        self.ranks = ranks
        self.ledger = ledger
        self.timeout = timeout
        self.asked: set[int] = set()

    def update(self, grid: Grid, server_round: int) -> int:
        """Ask the connected nodes not asked before; returns how many answered with a usable rank."""
        new = sorted(set(grid.get_node_ids()) - self.asked)
        if not new:
            return 0
        messages = [
            Message(content=RecordDict({CONFIG: ConfigRecord({})}), message_type=RANK_QUERY, dst_node_id=node)
            for node in new
        ]
        for msg in messages:
            self.ledger.add(server_round=server_round, node=msg.metadata.dst_node_id, direction=DOWN, phase=SETUP,
                            nbytes=message_bytes(msg))
        self.asked.update(new)
        answered = 0
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            node = reply.metadata.src_node_id
            if not reply.has_content():
                log(WARNING, "rank census: node %s sent no rank (%s); it is not trained", node, reply.error)
                continue
            self.ledger.add(server_round=server_round, node=node, direction=UP, phase=SETUP, nbytes=message_bytes(reply))
            metrics = reply.content.metric_records.get(METRICS)
            rank = metrics.get(ADAPTER_RANK) if metrics is not None else None
            try:
                if isinstance(rank, bool) or not isinstance(rank, int):
                    raise ValueError(f"`{ADAPTER_RANK}` = {rank!r} is not an integer")
                self.ranks.record(node, rank)
            except ValueError as exc:
                log(WARNING, "rank census: node %s: %s; it is not trained", node, exc)
                continue
            answered += 1
        return answered
