"""One metered round trip of a SecAgg+ stage: build messages, send, meter, sort the replies.

Every message down and every reply up is booked in the run's :class:`server.metering.ByteLedger`
under the stage's phase (``contract.secagg.PHASES``). In the collect stage the message also carries
the round's train instruction: its records are booked as ``train`` (what the round would send
without SecAgg) and one-time set-up records as ``setup``, as :class:`server.metering.Metered` does,
so the SecAgg phases hold exactly what SecAgg adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from contract import SETUP_RECORDS
from contract import secagg as wire
from server.metering import DOWN, SETUP, UP, ByteLedger
from server.secagg.outcome import Dropout

TRAIN = "train"


def record_bytes(record: Any) -> int:
    """``record.count_bytes()``, or its serialised size where Flower 1.42 cannot count it (a reply
    holding an empty list or empty bytes): an untrusted reply must not crash the meter."""
    try:
        return int(record.count_bytes())
    except (IndexError, ValueError):
        return len(record.deflate())


@dataclass
class Exchange:
    """Sends one stage's requests and keeps the dropouts of the whole round."""

    grid: Grid
    ledger: ByteLedger
    server_round: int
    timeout: float | None = None
    dropped: list[Dropout] = field(default_factory=list)

    def drop(self, node: int, stage: str, reason: str) -> None:
        """Record that ``node`` left the round."""
        self.dropped.append(Dropout(node, stage, reason))

    def _meter_by_phase(self, msg: Message, node: int, direction: str, phase: str) -> None:
        """Book the message's records, merging per phase (one ledger row per phase)."""
        totals: dict[str, int] = {}
        if msg.has_content():
            for key, record in msg.content.items():
                booked = SETUP if key in SETUP_RECORDS else phase if key in (wire.SECAGG, wire.VECTOR, wire.PUBLIC) else TRAIN
                totals[booked] = totals.get(booked, 0) + record_bytes(record)
        for booked, nbytes in totals.items():
            self.ledger.add(server_round=self.server_round, node=node, direction=direction, phase=booked, nbytes=nbytes)

    def send(self, stage: str, contents: Mapping[int, RecordDict]) -> dict[int, RecordDict]:
        """Send ``contents[node]`` to each node as ``stage``; return the content of each good reply.

        A node whose reply is missing (timeout), an error, or lacks the SecAgg record is dropped
        with the reason; a reply from a node that was not asked, or a second one, is ignored.
        """
        phase, name = wire.PHASES[stage], wire.STAGE_NAMES[stage]
        messages = []
        for node, content in contents.items():
            msg = Message(content=content, dst_node_id=node, message_type=stage, group_id=str(self.server_round))
            self._meter_by_phase(msg, node, DOWN, phase)
            messages.append(msg)
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout)) if messages else []
        good: dict[int, RecordDict] = {}
        seen: set[int] = set()
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            if node not in contents or node in seen:
                continue
            seen.add(node)
            self._meter_by_phase(reply, node, UP, phase)
            if reply.has_error():
                first_line = (reply.error.reason or "").strip().split("\n")[0]
                self.drop(node, name, f"error reply (code {reply.error.code}): {first_line}")
            elif not reply.has_content() or wire.SECAGG not in reply.content.config_records:
                self.drop(node, name, f"reply lacks the `{wire.SECAGG}` record")
            else:
                good[node] = reply.content
        for node in contents:
            if node not in seen:
                self.drop(node, name, "no reply (timeout)")
        return good
