"""The per-round record: one ``rounds.jsonl`` row and one printed table line per round.

It is Flower's ``evaluate_fn``: ``Strategy.start`` calls it before round 1 (round 0, the initial
model) and after every round, once training, aggregation and federated evaluation are done, so it
sees the round's metered bytes and aggregated train metrics, and adds central evaluation.

A row is built in two layers (``docs/trust.md §4``): first what clients reported, aggregated (the
declared train metrics under their own names, federated evaluation as ``fed_<name>``, task-plugin
metrics), then the server's own fields, written last so no client or plugin can set them:
``round``, ``clients``, ``dropped`` (and ``dropped/<rule>`` per rule broken), ``timed_out``, the
byte counts, central evaluation (``eval_*``), ``wall_s``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any, TextIO

from flwr.app import ArrayRecord, MetricRecord, MetricRecordValues

from contract import CLIENTS, DROPPED, EPSILON, NUM_EXAMPLES, PARTITION_ID, TRAIN_LOSS
from server.central_eval import CentralEvaluator
from server.metering import DOWN, SETUP, UP
from server.run_folder import RunFolder
from server.strategy_chain import StrategyChain

_COLUMNS = ("round", "clients", "dropped", "train_loss", "eval_loss", "eval_main", "MB_down", "MB_up", "secs")


def _fmt(value: Any, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.4f}".rjust(width)
    return str(value).rjust(width)


DROPPED_PREFIX = "dropped/"
"""Row fields ``dropped/<rule>``: this round's dropped train replies per rule broken (``docs/trust.md §3``)."""
DROPPED_EVALUATE = "dropped_evaluate"
"""Row field: this round's dropped evaluate replies; ``dropped_evaluate/<rule>`` per rule broken."""

_SERVER_FIELDS = frozenset({
    "round", "clients", "dropped", "timed_out", "bytes_down", "bytes_up", "bytes_setup", "bytes_down_total",
    "bytes_up_total", "wall_s", EPSILON, "epsilon_bounded_nodes", DROPPED_EVALUATE,
})


def _server_owned(name: str) -> bool:
    """Row fields only the server writes: its counters, bytes, time and central evaluation."""
    return name in _SERVER_FIELDS or name.startswith(("eval_", DROPPED_PREFIX, f"{DROPPED_EVALUATE}/"))


def dropped_summary(rows: list[dict[str, Any]], *, field: str = "dropped") -> dict[str, Any]:
    """``summary.json``'s ``dropped`` (train replies; ``field="dropped_evaluate"``: evaluate replies):
    ``{"total": n, "by_reason": {rule: n}}`` over every round, from the rows' ``<field>`` and ``<field>/<rule>``."""
    prefix = f"{field}/"
    by_reason: Counter[str] = Counter()
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix):
                by_reason[key.removeprefix(prefix)] += int(value)
    return {"total": sum(int(r.get(field, 0)) for r in rows), "by_reason": dict(sorted(by_reason.items()))}


def _count(value: MetricRecordValues) -> int:
    """A count the strategy aggregated (``clients``, ``dropped``): a scalar by construction."""
    if isinstance(value, list):
        raise TypeError(f"expected a count, got the list {value!r}")
    return int(value)


class RoundRecorder:
    """Writes and prints one row per round; call it as Flower's ``evaluate_fn``.

    It reads each round's numbers from the wrappers that collected them: bytes and aggregated
    metrics from the meter, task-plugin metrics from the relay, timeouts from the driver. ``rows``
    are the rows already recorded (a resumed run's, from its checkpoint).
    """

    def __init__(
        self,
        folder: RunFolder,
        chain: StrategyChain,
        evaluator: CentralEvaluator | None,
        *,
        main_metric: str,
        num_rounds: int,
        rows: list[dict[str, Any]],
        show_epsilon: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.folder = folder
        self.chain = chain
        self.evaluator = evaluator
        self.main_metric = main_metric
        self.num_rounds = num_rounds
        self.columns = (*_COLUMNS[:-1], EPSILON, _COLUMNS[-1]) if show_epsilon else _COLUMNS
        self.stream = stream or sys.stdout
        self.rows: list[dict[str, Any]] = list(rows)
        self._last = time.perf_counter()

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Record round ``server_round`` (0: the initial model)."""
        meter, ledger = self.chain.meter, self.chain.meter.ledger
        train = dict(meter.train_metrics.get(server_round, {}))
        fed_eval = dict(meter.evaluate_metrics.get(server_round, {}))
        clients, dropped = _count(train.pop(CLIENTS, 0)), _count(train.pop(DROPPED, 0))
        train.pop(PARTITION_ID, None)  # an identifier for ordering replies, not a metric
        train.pop(EPSILON, None)  # the max over this round's replies only: the server's ε ledger replaces it
        # 1. what clients reported (aggregated) and task plugins merged: never a server-owned name
        row: dict[str, Any] = {"train_loss": train.pop(TRAIN_LOSS, None)}
        row.update({k: v for k, v in train.items() if k != NUM_EXAMPLES})
        row.update({f"fed_{k}": v for k, v in fed_eval.items() if k not in (NUM_EXAMPLES, PARTITION_ID)})
        row.update(self.chain.relay.round_metrics.get(server_round, {}))  # task-plugin metrics
        for name in [k for k in row if _server_owned(k)]:
            del row[name]
        # 2. the server's own fields, last
        evaluate_drops = self.chain.relay.dropped_evaluate_by_reason(server_round)
        row.update({
            "round": server_round,
            "clients": clients,
            "dropped": dropped,
            **{f"{DROPPED_PREFIX}{code}": n for code, n in sorted(self.chain.relay.dropped_by_reason(server_round).items())},
            DROPPED_EVALUATE: sum(evaluate_drops.values()),
            **{f"{DROPPED_EVALUATE}/{code}": n for code, n in sorted(evaluate_drops.items())},
            "timed_out": int(self.chain.driver.timed_out.get(server_round, 0)),
            "bytes_down": ledger.total(server_round=server_round, direction=DOWN),
            "bytes_up": ledger.total(server_round=server_round, direction=UP),
            "bytes_setup": ledger.total(server_round=server_round, phase=SETUP),
            "bytes_down_total": ledger.total(direction=DOWN),
            "bytes_up_total": ledger.total(direction=UP),
        })
        row = {"round": server_round, **{k: v for k, v in row.items() if k != "round"}}  # `round` first, for reading
        result = None
        if self.evaluator is not None:
            metrics = self.evaluator(arrays)
            row.update({f"eval_{name}": value for name, value in metrics.values.items()})
            result = MetricRecord({f"eval_{name}": float(value) for name, value in metrics.values.items()})
            if metrics.samples:  # e.g. a few generations: samples/round-<N>.jsonl
                path = self.folder.path / "samples" / f"round-{server_round:03d}.jsonl"
                path.parent.mkdir(exist_ok=True)
                path.write_text("".join(json.dumps(sample, sort_keys=True) + "\n" for sample in metrics.samples))
        ledger_eps = self.chain.driver.epsilon
        if ledger_eps is not None:  # docs/privacy.md §10: every node's ε, reported or bounded; set last
            row[EPSILON] = ledger_eps.epsilon()
            row["epsilon_bounded_nodes"] = ledger_eps.bounded_nodes()
        now = time.perf_counter()
        row["wall_s"] = round(now - self._last, 3)
        self._last = now
        self.rows.append(row)
        self.folder.append_round(row)
        self._print(row)
        return result

    def _print(self, row: dict[str, Any]) -> None:
        if row["round"] == 0:
            print(f"Corolla run folder: {self.folder.path}", file=self.stream)
            header = [f"eval_{self.main_metric}"[:10] if c == "eval_main" else c for c in self.columns]
            print(" ".join(c.rjust(10) for c in header), file=self.stream)
        cells = {
            "round": f"{row['round']}/{self.num_rounds}",
            "eval_loss": row.get("eval_loss"),
            "eval_main": row.get(f"eval_{self.main_metric}"),
            "MB_down": round(row["bytes_down"] / 1e6, 3),
            "MB_up": round(row["bytes_up"] / 1e6, 3),
            "secs": row["wall_s"],
        }
        values = [cells[c] if c in cells else row.get(c) for c in self.columns]
        print(" ".join(_fmt(v, 10) for v in values), file=self.stream, flush=True)
