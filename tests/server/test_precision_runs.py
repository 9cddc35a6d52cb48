"""Low-precision bases and wire dtypes through the real ServerApp/ClientApp path (in-process grid).

``exact_rel_error`` (docs/precision.md §4) is logged every round by the exact strategies; with the
base delta kept in float32 beside a bf16 base it stays at float32 round-off, and folding the same
delta into the bf16 weights (``model.base-delta = fold``) is measurably worse: the reason the
float32 delta exists. ``adapter.wire-dtype = bfloat16`` halves the payload bytes exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.app import app as client_app
from contract import ARRAYS, message_bytes
from contract.wire import bf16_bits_to_float32
from server.app import run
from contract import parse_run_config
from tests.strategies.fake_grid import FakeGrid

SMALL = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "adapter.rank": 4,
    "adapter.alpha": 8.0,
    "train.local-steps": 2,
    "train.lr": 0.02,
    "train.batch-size": 4,
    "eval.central": False,
    "num-server-rounds": 2,
    "data.partitioner": "iid",
    "task.max-length": 32,
    "task.examples-per-client": 8,
    "adapter.init-examples": 8,
}
EXACT = ["fedex", "flora", "ffa", "fedsb"]
BOUND = 1e-6  # float32 round-off of the float32 payload and delta (docs/precision.md §4)


def _run(tmp_path: Path, clients: int = 2, **overrides: Any) -> tuple[FakeGrid, Path]:
    values = {**SMALL, **{k.replace("__", ".").replace("_", "-"): v for k, v in overrides.items()}, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, clients, run_config=values)
    return grid, run(grid, parse_run_config(values)).path


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]


def _errors(folder: Path) -> list[float]:
    return [row["exact_rel_error"] for row in _rows(folder) if row["round"] > 0]


@pytest.mark.parametrize("strategy", EXACT)
def test_exact_strategies_stay_exact_on_a_bf16_base(tmp_path: Path, strategy: str) -> None:
    _, folder = _run(tmp_path, strategy__name=strategy, model__dtype="bfloat16", model__base_delta="float32")
    errors = _errors(folder)
    assert len(errors) == 2
    assert all(0.0 <= e <= BOUND for e in errors), errors


@pytest.mark.slow
@pytest.mark.parametrize("strategy", EXACT)
def test_exact_strategies_stay_exact_on_a_float32_base(tmp_path: Path, strategy: str) -> None:
    _, folder = _run(tmp_path, strategy__name=strategy, model__base_delta="float32")
    assert all(0.0 <= e <= BOUND for e in _errors(folder))


def test_folding_the_delta_into_a_bf16_base_rounds_the_exactness_away(tmp_path: Path) -> None:
    """The naive design: FedEx-LoRA's residual written into bf16 weights. bf16 keeps 8 significant
    bits, so the residual (far below |W0|) is rounded: the audit sees errors ~1e-3, over 1000x the bound."""
    _, folder = _run(tmp_path, strategy__name="fedex", model__dtype="bfloat16", model__base_delta="fold")
    errors = _errors(folder)
    assert min(errors) > 1000 * BOUND, errors


def test_fedit_is_not_audited_and_keeps_its_deviation_metric(tmp_path: Path) -> None:
    _, folder = _run(tmp_path, strategy__name="fedit", num_server_rounds=1, audit__exactness=True)
    row = _rows(folder)[1]
    assert "exact_rel_error" not in row and row["dev_rel_mean"] > 0


def test_bf16_on_the_wire_halves_the_payload_bytes_exactly(tmp_path: Path) -> None:
    grid, folder = _run(tmp_path, strategy__name="fedit", num_server_rounds=1, adapter__wire_dtype="bfloat16")
    with (folder / "ledger.csv").open() as handle:
        ledger = [r for r in csv.DictReader(handle) if r["round"] == "1" and r["phase"] == "train"]
    assert len(grid.log) == 2 and len(ledger) == 4
    for instruction, reply in grid.log:
        for msg, direction in ((instruction, "down"), (reply, "up")):
            node = msg.metadata.dst_node_id if direction == "down" else msg.metadata.src_node_id
            booked = next(int(r["bytes"]) for r in ledger if r["direction"] == direction and int(r["node"]) == node)
            record = msg.content.array_records[ARRAYS]
            if direction == "down":  # the grid logged the instruction as sent: bf16 bits in uint16
                assert {a.numpy().dtype for a in record.values()} == {np.dtype(np.uint16)}
                data_bytes = sum(a.numpy().size for a in record.values()) * 2
            else:  # the server decoded the reply to float32 in place before aggregating it
                assert {a.numpy().dtype for a in record.values()} == {np.dtype(np.float32)}
                data_bytes = sum(a.numpy().size for a in record.values()) * 2
            as_float32 = message_bytes(msg) if direction == "up" else _as_float32_bytes(msg)
            assert as_float32 - booked == data_bytes  # exactly half of the float32 payload's data bytes


def _as_float32_bytes(msg: Any) -> int:
    from flwr.app import Array, ArrayRecord, RecordDict

    content = RecordDict(dict(msg.content.items()))
    content[ARRAYS] = ArrayRecord({k: Array(bf16_bits_to_float32(a.numpy())) for k, a in msg.content[ARRAYS].items()})
    return message_bytes(content)


@pytest.mark.slow
def test_exact_strategies_are_exact_for_the_values_sent_in_bf16(tmp_path: Path) -> None:
    """FLoRA broadcasts B = 0 and a fresh A, so rounding the download changes no update: it stays
    exact with bf16 on the wire; what the clients upload is aggregated exactly as received."""
    _, folder = _run(tmp_path, strategy__name="flora", adapter__wire_dtype="bfloat16")
    assert all(0.0 <= e <= BOUND for e in _errors(folder))
