"""The round row: server-owned fields are written last, so no client metric or plugin metric can set them."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flwr.app import ArrayRecord, MetricRecord

from server.metering import ByteLedger
from server.recorder import RoundRecorder, dropped_summary
from server.run_folder import RunFolder, read_rounds


def _recorder(tmp_path: Path, *, train: dict[str, Any], fed: dict[str, Any], plugin: dict[str, float]) -> RoundRecorder:
    ledger = ByteLedger()
    ledger.add(server_round=1, node=7, direction="up", phase="train", nbytes=123)
    chain = SimpleNamespace(
        meter=SimpleNamespace(ledger=ledger, train_metrics={1: MetricRecord(train)}, evaluate_metrics={1: MetricRecord(fed)}),
        driver=SimpleNamespace(timed_out={1: 1}, epsilon=None),
        relay=SimpleNamespace(round_metrics={1: plugin}, dropped_by_reason=lambda rnd: {"array-header": 2, "update-norm": 1},
                              dropped_evaluate_by_reason=lambda rnd: {"metric-non-finite": 1}),
    )
    return RoundRecorder(RunFolder(tmp_path), chain, None, main_metric="accuracy", num_rounds=1, rows=[],  # type: ignore[arg-type]
                         stream=io.StringIO())


def test_server_fields_win_over_client_and_plugin_metrics(tmp_path: Path) -> None:
    hostile = {"round": 99.0, "clients": 0.0, "dropped": 0.0, "timed_out": 0.0, "bytes_up": 0.0, "bytes_down_total": 0.0,
               "wall_s": 0.0, "eval_accuracy": 1.0, "dropped/forged": 5.0, "probe": 2.0, "dropped_evaluate": 0.0,
               "dropped_evaluate/forged": 4.0}
    recorder = _recorder(tmp_path, train={"clients": 3, "dropped": 3, "train_loss": 0.5, "num-examples": 40, "partition-id": 2},
                         fed={"clients": 2, "eval_accuracy": 0.25, "partition-id": 1, "num-examples": 9}, plugin=hostile)
    recorder(1, ArrayRecord())
    (row,) = read_rounds(tmp_path / "rounds.jsonl")
    assert (row["round"], row["clients"], row["dropped"], row["timed_out"]) == (1, 3, 3, 1)
    assert (row["bytes_up"], row["bytes_down"], row["bytes_down_total"]) == (123, 0, 0)
    assert row["dropped/array-header"] == 2 and row["dropped/update-norm"] == 1 and "dropped/forged" not in row
    assert row["dropped_evaluate"] == 1 and row["dropped_evaluate/metric-non-finite"] == 1 and "dropped_evaluate/forged" not in row
    assert "eval_accuracy" not in row  # central evaluation is off: nobody else may write it
    assert row["fed_eval_accuracy"] == 0.25 and row["fed_clients"] == 2 and row["probe"] == 2.0
    assert row["train_loss"] == 0.5
    assert not {"num-examples", "partition-id", "fed_partition-id", "fed_num-examples"} & set(row)


def test_dropped_summary_sums_every_rule_over_the_rows() -> None:
    rows = [{"round": 0, "dropped": 0}, {"round": 1, "dropped": 3, "dropped/array-header": 2, "dropped/error-reply": 1},
            {"round": 2, "dropped": 1, "dropped/array-header": 1}]
    assert dropped_summary(rows) == {"total": 4, "by_reason": {"array-header": 3, "error-reply": 1}}


def test_dropped_summary_of_evaluate_replies_reads_their_own_fields() -> None:
    rows = [{"round": 1, "dropped": 2, "dropped/array-header": 2, "dropped_evaluate": 1, "dropped_evaluate/metric-non-finite": 1},
            {"round": 2, "dropped": 0, "dropped_evaluate": 2, "dropped_evaluate/error-reply": 2}]
    assert dropped_summary(rows, field="dropped_evaluate") == {"total": 3, "by_reason": {"error-reply": 2, "metric-non-finite": 1}}
    assert dropped_summary(rows) == {"total": 2, "by_reason": {"array-header": 2}}
