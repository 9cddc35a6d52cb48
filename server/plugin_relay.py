"""The server side of the task-plugin hooks (``client.tasks.base``): reports up, merged state down.

``PluginRelay`` wraps the strategy itself, *inside* :class:`server.metering.Metered`, so the reports
and broadcasts it adds are metered with everything else. It starts from the broadcast a resumed run
saved (installed on the server's task at once), or none. Per round it

1. adds the current broadcast (if any) to every train and evaluate instruction,
2. after the strategy aggregated, and only for a task that implements ``merge_reports``, hands
   every reply the strategy accepted (not in its ``last_dropped``) to it; a reply whose report is unreadable
   is still aggregated - only its report is skipped, and the count is in ``plugin_bad_reports``,
3. keeps the returned metrics for the round's row (:attr:`round_metrics`), writes ``detail`` to
   ``plugins/round-<N>.json``, and installs a new ``broadcast`` on the server's task (central
   evaluation sees it) and for the next round's messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from logging import WARNING
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from client.tasks.base import ClientReport, Task
from contract import ARRAYS, BROADCAST, METRICS, NUM_EXAMPLES, ReportError, encode_json_record, message_report
from server.strategy_wrapper import StrategyWrapper
from strategies.protocol import CorollaStrategy


class PluginRelay(StrategyWrapper[CorollaStrategy]):
    """Wrap the strategy to relay ``task``'s plugin reports and broadcasts (module docstring)."""

    wraps = CorollaStrategy

    def __init__(
        self, strategy: CorollaStrategy, task: Task, folder: Path, *, broadcast: dict[str, Any] | None = None
    ) -> None:
        super().__init__(strategy)
        self.task = task
        self.folder = folder
        self.broadcast = broadcast
        if broadcast is not None:
            task.apply_broadcast(broadcast)
        self.round_metrics: dict[int, dict[str, float]] = {}
        self._sent: dict[int, ArrayRecord] = {}

    def _attach(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        if self.broadcast is not None:
            for msg in messages:
                msg.content[BROADCAST] = encode_json_record(self.broadcast)
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate, then attach the broadcast; remember what was sent."""
        self._sent = {server_round: arrays}
        return self._attach(self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegate, then merge the accepted replies' reports."""
        replies = list(replies)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        sent = self._sent.get(server_round)
        if sent is not None and self.task.implements("merge_reports"):
            self._merge(server_round, replies, sent)
        return arrays, metrics

    def _accepted(self, replies: list[Message]) -> list[Message]:
        """The replies the strategy aggregated: its own ``last_dropped`` verdicts, not a second check."""
        nodes = {node for node, _ in self.inner.last_dropped}
        return [r for r in replies if r.has_content() and r.metadata.src_node_id not in nodes]

    def _merge(self, server_round: int, replies: list[Message], sent: ArrayRecord) -> None:
        reports: list[ClientReport] = []
        bad = 0
        for reply in self._accepted(replies):
            try:
                report = message_report(reply)
            except ReportError as exc:
                bad += 1
                log(WARNING, "round %d: node %d sent an unreadable plugin report (%s); its update is still used",
                    server_round, reply.metadata.src_node_id, exc)
                continue
            reports.append(
                ClientReport(
                    node=reply.metadata.src_node_id,
                    num_examples=int(cast(float, reply.content.metric_records[METRICS][NUM_EXAMPLES])),  # a number: the strategy accepted it
                    report=report,
                    arrays={key: array.numpy() for key, array in reply.content.array_records[ARRAYS].items()},
                )
            )
        merged = self.task.merge_reports(server_round, reports, sent={k: a.numpy() for k, a in sent.items()})
        row = {key: float(value) for key, value in merged.metrics.items()}
        if bad:
            row["plugin_bad_reports"] = float(bad)
        self.round_metrics[server_round] = row
        if merged.detail is not None:
            path = self.folder / "plugins" / f"round-{server_round:03d}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(merged.detail, indent=1, sort_keys=True) + "\n")
        if merged.broadcast is not None:
            self.broadcast = merged.broadcast
            self.task.apply_broadcast(merged.broadcast)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate, then attach the broadcast."""
        return self._attach(self.inner.configure_evaluate(server_round, arrays, config, grid))
