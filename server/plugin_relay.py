"""The server side of the task-plugin hooks (``client.tasks.base``): reports up, merged state down.

``PluginRelay`` wraps the strategy itself, *inside* :class:`server.metering.Metered`, so the reports
and broadcasts it adds are metered with everything else. It starts from the broadcast a resumed run
saved (installed on the server's task at once), or none. Per round it

1. adds the current broadcast (if any) to every train and evaluate instruction,
2. after the strategy aggregated, and only for a task that implements ``merge_reports``, hands
   every reply the strategy accepted (not in its ``last_dropped``) to it. Reports are untrusted
   (``docs/trust.md §5``): each is decoded and validated against the task's ``report_schema``
   first; one that cannot be - or that makes the merge raise, or yields metrics or a broadcast that
   are not finite JSON - is skipped, never the run. Its reply is still aggregated; only the report
   is left out, counted in ``plugin_bad_reports``,
3. keeps the returned metrics for the round's row (:attr:`round_metrics`), writes ``detail`` to
   ``plugins/round-<N>.json``, and installs a new ``broadcast`` on the server's task (central
   evaluation sees it) and for the next round's messages.

It also keeps, per round, how many train replies the strategy dropped for which rule
(:meth:`dropped_by_reason`; the recorder's ``dropped/<rule>`` fields).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from client.tasks.base import ClientReport, ReportMerge, Task
from contract import ARRAYS, BROADCAST, METRICS, NUM_EXAMPLES, encode_json_record, message_report
from server.strategy_wrapper import StrategyWrapper
from strategies.protocol import CorollaStrategy
from strategies.validation import accepted_replies


class BadMerge(ValueError):
    """A merge whose result the server cannot use (non-finite metrics, a broadcast that is not JSON)."""


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
        self._dropped: dict[int, Counter[str]] = {}
        self._dropped_evaluate: dict[int, Counter[str]] = {}

    def dropped_by_reason(self, server_round: int) -> dict[str, int]:
        """How many train replies of ``server_round`` the strategy dropped, per rule broken."""
        return dict(self._dropped.get(server_round, Counter()))

    def dropped_evaluate_by_reason(self, server_round: int) -> dict[str, int]:
        """How many evaluate replies of ``server_round`` the strategy dropped, per rule broken."""
        return dict(self._dropped_evaluate.get(server_round, Counter()))

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
        self._dropped[server_round] = Counter(drop.code for drop in self.inner.last_dropped)
        sent = self._sent.get(server_round)
        if sent is not None and self.task.implements("merge_reports"):
            self._merge(server_round, replies, sent)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate, then count the evaluate replies the strategy dropped, per rule."""
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        self._dropped_evaluate[server_round] = Counter(drop.code for drop in self.inner.last_dropped_evaluate)
        return metrics

    def _report(self, reply: Message) -> ClientReport:
        """One accepted reply's report, decoded and checked against the task's ``report_schema``."""
        report = message_report(reply)
        if report is not None and self.task.report_schema is not None:
            self.task.report_schema.model_validate(report)
        count = reply.content.metric_records[METRICS][NUM_EXAMPLES]
        if isinstance(count, list):  # pragma: no cover - the strategy refused lists already
            raise TypeError(f"`{NUM_EXAMPLES}` is a list")
        return ClientReport(
            node=reply.metadata.src_node_id,
            num_examples=int(count),
            report=report,
            arrays={key: array.numpy() for key, array in reply.content.array_records[ARRAYS].items()},
        )

    def _try_merge(
        self, server_round: int, reports: list[ClientReport], sent: dict[str, Any]
    ) -> tuple[ReportMerge, dict[str, float], str | None]:
        """``merge_reports``, checked usable: ``(merged, row metrics, detail as JSON text)``; raises
        whatever went wrong (the merge itself, infinite metrics, a broadcast or detail that is not JSON)."""
        merged = self.task.merge_reports(server_round, reports, sent=sent)
        row = {str(key): float(value) for key, value in merged.metrics.items()}
        if any(math.isinf(v) for v in row.values()):
            raise BadMerge(f"merged metrics are infinite: {sorted(k for k, v in row.items() if math.isinf(v))[:5]}")
        if merged.broadcast is not None:
            encode_json_record(merged.broadcast)  # the next round must be able to send it
        detail = None if merged.detail is None else json.dumps(merged.detail, indent=1, sort_keys=True) + "\n"
        return merged, row, detail

    def _merge(self, server_round: int, replies: list[Message], sent: ArrayRecord) -> None:
        reports: list[ClientReport] = []
        bad = 0
        for reply in accepted_replies(replies, self.inner.last_dropped):
            try:
                reports.append(self._report(reply))
            except Exception as exc:  # noqa: BLE001 - any failure of one report skips that report, never the run
                bad += 1
                log(WARNING, "round %d: node %d sent an unusable plugin report (%s: %.200s); its update is still used",
                    server_round, reply.metadata.src_node_id, type(exc).__name__, exc)
        sent_arrays = {k: a.numpy() for k, a in sent.items()}
        try:
            merged, row, detail = self._try_merge(server_round, reports, sent_arrays)
        except Exception as exc:  # noqa: BLE001 - find the reports that break the merge, keep the rest
            log(WARNING, "round %d: merging %d plugin reports failed (%s: %.200s); merging them one by one",
                server_round, len(reports), type(exc).__name__, exc)
            kept: list[ClientReport] = []
            for report in reports:
                try:
                    self._try_merge(server_round, [*kept, report], sent_arrays)
                except Exception as one:  # noqa: BLE001 - this report breaks the merge: skip it
                    bad += 1
                    log(WARNING, "round %d: node %d's plugin report breaks the merge (%s: %.200s); skipped",
                        server_round, report.node, type(one).__name__, one)
                    continue
                kept.append(report)
            try:
                merged, row, detail = self._try_merge(server_round, kept, sent_arrays)
            except Exception as still:  # noqa: BLE001 - the task's merge fails on its own: keep the last broadcast
                log(WARNING, "round %d: the plugin merge fails even without the bad reports (%s); skipped this round",
                    server_round, still)
                merged, row, detail = ReportMerge(), {}, None
        if bad:
            row["plugin_bad_reports"] = float(bad)
        self.round_metrics[server_round] = row
        if detail is not None:
            path = self.folder / "plugins" / f"round-{server_round:03d}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(detail)
        if merged.broadcast is not None:
            self.broadcast = merged.broadcast
            self.task.apply_broadcast(merged.broadcast)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate, then attach the broadcast."""
        return self._attach(self.inner.configure_evaluate(server_round, arrays, config, grid))
