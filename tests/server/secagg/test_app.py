"""The whole ServerApp with ``secagg.enabled`` over FakeGrid and the real ClientApp (tiny-llama): the
result equals the run without SecAgg within the quantisation bound, and the ledger shows the cost."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from client.app import app as client_app
from contract import parse_run_config
from contract import secagg as wire
from server.app import run
from server.run_folder import read_rounds
from simulations.comm_secagg import secagg_cost
from tests.strategies.fake_grid import FakeGrid

RUN = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 1,
    "train.local-steps": 4,
    "train.lr": 0.01,
    "train.batch-size": 8,
    "adapter.rank": 4,
    "data.partitioner": "iid",
    "eval.max-examples": 16,
    "min-train-nodes": 3,
}


def _run(tmp: Path, name: str, **overrides: Any) -> Path:
    values = {**RUN, **overrides, "output-dir": str(tmp), "run-name": name}
    return run(FakeGrid(client_app, 3, run_config=values), parse_run_config(values)).path


def _adapter(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def _phases(folder: Path) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    with (folder / "ledger.csv").open() as handle:
        for row in csv.DictReader(handle):
            key = (row["phase"], row["direction"])
            out[key] = out.get(key, 0) + int(row["bytes"])
    return out


@pytest.mark.parametrize("strategy", ["fedsb", "fedit"])
def test_secagg_run_matches_the_plain_run_within_the_bound(tmp_path: Path, strategy: str) -> None:
    plain = _run(tmp_path, f"{strategy}-plain", **{"strategy.name": strategy})
    secure = _run(tmp_path, f"{strategy}-secagg", **{"strategy.name": strategy, "secagg.enabled": True})
    a, b = _adapter(plain), _adapter(secure)
    assert a.keys() == b.keys()
    bound = 2 * 1.0 / (2**22 - 1)  # 2c / (2^b - 1) with the default clip-range and bits
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)
    assert 0 < worst < bound + 1e-6  # float32 rounding of the stored adapter on top of the bound
    rows = read_rounds(secure / "rounds.jsonl")
    assert rows[1]["clients"] == 3 and rows[1]["dropped"] == 0
    assert abs(rows[1]["train_loss"] - read_rounds(plain / "rounds.jsonl")[1]["train_loss"]) < 1e-4
    assert not any(k.startswith("dev_rel") for k in rows[1])  # needs individual updates: not reported
    phases = _phases(secure)
    for stage in wire.STAGES:
        assert phases[(wire.PHASES[stage], "up")] > 0 and phases[(wire.PHASES[stage], "down")] > 0
    assert ("train", "up") not in phases and phases[("train", "down")] == _phases(plain)[("train", "down")]
    if strategy == "fedit":  # the payload is the whole adapter: `corolla comm`'s SecAgg bytes are exact
        cost = secagg_cost(sum(int(v.size) for v in b.values()), 3)
        for stage in wire.STAGES:
            name = wire.STAGE_NAMES[stage]
            assert (phases[(wire.PHASES[stage], "down")], phases[(wire.PHASES[stage], "up")]) == (3 * cost.down[name], 3 * cost.up[name])
    summary = json.loads((secure / "summary.json").read_text())
    assert summary["bytes_up"] == sum(v for (phase, d), v in phases.items() if d == "up")
    assert summary["secagg"]["masked"][1:] == ["num-examples", "train_loss"] and summary["secagg"]["rounds_dropped"] == 0
    assert "secagg" not in json.loads((plain / "summary.json").read_text())


def test_a_client_failing_after_masking_is_dropped_and_the_run_completes(tmp_path: Path) -> None:
    folder = _run(tmp_path, "faults", **{"strategy.name": "fedsb", "secagg.enabled": True, "secagg.threshold": 2,
                                          "num-server-rounds": 2, "faults.fail-fraction": 0.34})
    rows = read_rounds(folder / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert sum(r["dropped"] for r in rows[1:]) >= 1
    assert all(r["clients"] + r["dropped"] == 3 for r in rows[1:])


def test_fedex_with_secagg_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a weighted sum"):
        _run(tmp_path, "refused", **{"strategy.name": "fedex", "secagg.enabled": True})
    assert not (tmp_path / "refused").exists()


def test_with_dp_the_epsilon_ledger_books_the_plaintext_epsilon_of_every_survivor(tmp_path: Path) -> None:
    folder = _run(tmp_path, "dp", **{"strategy.name": "fedit", "secagg.enabled": True, "privacy.enabled": True,
                                      "privacy.noise-multiplier": 0.8, "train.local-steps": 2})
    rows = read_rounds(folder / "rounds.jsonl")
    nodes = json.loads((folder / "summary.json").read_text())["privacy"]["nodes"]
    assert len(nodes) == 3 and all(n["reported"] > 0 and n["rounds"] == 1 and n["unreported"] == 0 for n in nodes)
    assert rows[1]["epsilon"] == max(n["reported"] for n in nodes) and rows[1]["epsilon_bounded_nodes"] == 0
