"""The per-round record: one ``rounds.jsonl`` row and one printed table line per round.

It is Flower's ``evaluate_fn``: ``Strategy.start`` calls it before round 1 (round 0, the initial
model) and after every round, once training, aggregation and federated evaluation are done, so it
sees the round's metered bytes and aggregated train metrics, and adds central evaluation.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from flwr.app import ArrayRecord, MetricRecord

from server.central_eval import CentralEvaluator
from contract import EPSILON, PARTITION_ID
from server.metering import DOWN, SETUP, UP, Metered
from server.run_folder import RunFolder

_COLUMNS = ("round", "clients", "dropped", "train_loss", "eval_loss", "eval_main", "MB_down", "MB_up", "secs")


def _fmt(value: Any, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.4f}".rjust(width)
    return str(value).rjust(width)


class RoundRecorder:
    """Writes and prints one row per round; call it as Flower's ``evaluate_fn``."""

    def __init__(
        self,
        folder: RunFolder,
        meter: Metered,
        evaluator: CentralEvaluator | None,
        *,
        main_metric: str,
        num_rounds: int,
        show_epsilon: bool = False,
        stream: TextIO | None = None,
        rows: list[dict[str, Any]] | None = None,
        timed_out: dict[int, int] | None = None,
    ) -> None:
        self.folder = folder
        self.meter = meter
        self.evaluator = evaluator
        self.main_metric = main_metric
        self.num_rounds = num_rounds
        self.columns = (*_COLUMNS[:-1], EPSILON, _COLUMNS[-1]) if show_epsilon else _COLUMNS
        self.stream = stream or sys.stdout
        self.timed_out = timed_out if timed_out is not None else {}  # per round, from the RoundDriver
        self.rows: list[dict[str, Any]] = list(rows or [])  # a resumed run starts with the checkpoint's rows
        self._last = time.perf_counter()

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Record round ``server_round`` (0: the initial model)."""
        train = dict(self.meter.train_metrics.get(server_round, {}))
        fed_eval = dict(self.meter.evaluate_metrics.get(server_round, {}))
        row: dict[str, Any] = {
            "round": server_round,
            "clients": int(train.pop("clients", 0)),
            "dropped": int(train.pop("dropped", 0)),
            "timed_out": int(self.timed_out.get(server_round, 0)),
            "bytes_down": self.meter.ledger.total(server_round=server_round, direction=DOWN),
            "bytes_up": self.meter.ledger.total(server_round=server_round, direction=UP),
            "train_loss": train.pop("train_loss", None),
        }
        row["bytes_setup"] = self.meter.ledger.total(server_round=server_round, phase=SETUP)
        row["bytes_down_total"] = self.meter.ledger.total(direction=DOWN)
        row["bytes_up_total"] = self.meter.ledger.total(direction=UP)
        train.pop(PARTITION_ID, None)  # an identifier for ordering replies, not a metric
        row.update({k: v for k, v in train.items() if k != "num-examples"})
        row.update({f"fed_{k}": v for k, v in fed_eval.items() if k != "num-examples"})
        row.update(getattr(self.meter, "round_metrics", {}).get(server_round, {}))  # task-plugin metrics
        result = None
        if self.evaluator is not None:
            metrics = self.evaluator(arrays)
            row.update({f"eval_{name}": value for name, value in metrics.values.items()})
            result = MetricRecord({f"eval_{name}": float(value) for name, value in metrics.values.items()})
            if metrics.samples:  # e.g. a few generations: samples/round-<N>.jsonl
                path = self.folder.path / "samples" / f"round-{server_round:03d}.jsonl"
                path.parent.mkdir(exist_ok=True)
                path.write_text("".join(json.dumps(sample, sort_keys=True) + "\n" for sample in metrics.samples))
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
