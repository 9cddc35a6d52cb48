"""Checkpoint and resume: a run killed after round t and resumed ends bit-identical to one never killed.

Everything runs on the in-process grid (real ServerApp and ClientApp). The resumed run gets a fresh
grid - new Flower contexts, as a restarted simulation or deployment would - so what carries the run
across the kill is only the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.app import app as client_app
from server.app import run
from server.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError
from server.run_folder import read_rounds
from contract import ConfigError, parse_run_config
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid


class Killed(RuntimeError):
    """Stands in for the process dying."""


class DyingGrid(FakeGrid):
    """A grid whose server 'dies' when round ``die_at`` starts."""

    def __init__(self, *args: Any, die_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.die_at = die_at

    def push_messages(self, messages):  # noqa: ANN001, ANN201 - Grid API
        messages = list(messages)
        if any(int(m.content["config"]["server-round"]) == self.die_at for m in messages):
            raise Killed(f"killed at the start of round {self.die_at}")
        return super().push_messages(messages)


def _values(out: Path, name: str, **extra: Any) -> dict[str, Any]:
    return {**TINY_RUN, "output-dir": str(out), "run-name": name, "num-server-rounds": 4, "train.local-steps": 2,
            "eval.max-examples": 16, "fraction-train": 0.67, **extra}


def _adapter_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()


def _killed_then_resumed(tmp_path: Path, **extra: Any) -> tuple[Path, Path]:
    whole = run(FakeGrid(client_app, 3, run_config=_values(tmp_path, "whole", **extra)), parse_run_config(_values(tmp_path, "whole", **extra))).path
    values = _values(tmp_path, "killed", **extra)
    with pytest.raises(Killed):
        run(DyingGrid(client_app, 3, run_config=values, die_at=3), parse_run_config(values))
    killed = tmp_path / "killed"
    assert Checkpoint.load(killed).server_round == 2
    resumed_values = {**values, "resume-from": str(killed)}
    run(FakeGrid(client_app, 3, run_config=resumed_values), parse_run_config(resumed_values))
    return whole, killed


@pytest.mark.parametrize("strategy", ["fedit", "fedsb", "fedex"])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path: Path, strategy: str) -> None:
    extra = {"strategy.name": strategy, "adapter.rank": 8 if strategy == "fedsb" else 4}
    whole, resumed = _killed_then_resumed(tmp_path, **extra)
    assert _adapter_digest(resumed) == _adapter_digest(whole)
    # every metric of every round is the same; what goes *down* after the resume may differ: the new
    # nodes need Fed-SB's frozen B, A again and FedEx's base from version 0 (the canonical base makes
    # that bit-identical to the uninterrupted nodes' round-by-round one)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s" and not k.startswith("bytes_")} for r in rows]  # noqa: E731
    rows_resumed, rows_whole = read_rounds(resumed / "rounds.jsonl"), read_rounds(whole / "rounds.jsonl")
    assert strip(rows_resumed) == strip(rows_whole)
    assert [r["bytes_up"] for r in rows_resumed] == [r["bytes_up"] for r in rows_whole]
    assert [r["bytes_down"] for r in rows_resumed[:3]] == [r["bytes_down"] for r in rows_whole[:3]]
    if strategy == "fedit":
        assert (resumed / "ledger.csv").read_text() == (whole / "ledger.csv").read_text()
    if strategy == "fedsb":  # exactly the one-time set-up again, to the nodes of round 3
        assert rows_resumed[3]["bytes_down"] - rows_resumed[3]["bytes_setup"] == rows_whole[3]["bytes_down"]
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_after_round"] == 2


def test_the_checkpoint_is_replaced_atomically_and_holds_the_last_round(tmp_path: Path) -> None:
    values = _values(tmp_path, "one", **{"num-server-rounds": 2})
    folder = run(FakeGrid(client_app, 3, run_config=values), parse_run_config(values)).path
    assert [p.name for p in folder.iterdir() if "checkpoint" in p.name] == [CHECKPOINT_NAME]  # no temp file left
    ckpt = Checkpoint.load(folder)
    assert ckpt.server_round == 2 and len(ckpt.rows) == 3 and ckpt.config["run-name"] == "one"


def test_resume_refuses_a_changed_config_and_a_folder_without_checkpoint(tmp_path: Path) -> None:
    values = _values(tmp_path, "base", **{"num-server-rounds": 1})
    folder = run(FakeGrid(client_app, 3, run_config=values), parse_run_config(values)).path
    changed = {**values, "resume-from": str(folder), "train.lr": 0.5}
    with pytest.raises(CheckpointError, match=r"`train.lr`: checkpoint 0.01, now 0.5"):
        run(FakeGrid(client_app, 3, run_config=changed), parse_run_config(changed))
    empty = {**values, "resume-from": str(tmp_path)}
    with pytest.raises(CheckpointError, match="has no checkpoint.safetensors"):
        run(FakeGrid(client_app, 3, run_config=empty), parse_run_config(empty))


def test_resume_refuses_dp_runs_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="cannot continue a DP run"):
        parse_run_config({"resume-from": "runs/x", "privacy.enabled": True, "privacy.noise-multiplier": 1.0})


def test_the_fedex_residual_log_round_trips_through_its_state_bit_for_bit() -> None:
    from strategies.maths.residual_log import ResidualLog  # noqa: PLC0415
    from strategies.maths.transport import ResidualTransport  # noqa: PLC0415

    rng = np.random.default_rng(3)
    log = ResidualLog({"q": (24, 16), "v": (8, 16)}, budget=0.5)
    for _ in range(4):  # factored and dense rounds, some collapsed below the floor
        log.record({"q": ResidualTransport.from_factors(rng.standard_normal((24, 2)), rng.standard_normal((2, 16))),
                    "v": rng.standard_normal((8, 16))})
    again = ResidualLog.from_state(*log.state())
    assert (again.version, again.floor) == (log.version, log.floor) and log.floor > 0
    for version in range(log.version + 1):
        want, got = log.delta_since(version), again.delta_since(version)
        assert (want.since, want.splits) == (got.since, got.splits)
        for module, t in want.modules.items():
            for x, y in zip(t.arrays, got.modules[module].arrays, strict=True):
                assert x.tobytes() == y.tobytes()


def test_a_checkpoint_round_trips_flower_s_64_bit_node_ids(tmp_path: Path) -> None:
    from server.metering import LedgerRow  # noqa: PLC0415

    node = 2**64 - 12345  # real Flower node ids are random uint64, beyond int64
    ckpt = Checkpoint(server_round=1, config={"seed": 1}, global_arrays={"a": np.ones((2, 2), np.float32)}, frozen={},
                      strategy_arrays={}, strategy_meta={}, rng_state=__import__("random").getstate(),
                      ledger=[LedgerRow(1, node, "up", "train", 123), LedgerRow(1, 7, "down", "setup", 9)], rows=[{"round": 0}, {"round": 1}])
    ckpt.save(tmp_path)
    again = Checkpoint.load(tmp_path)
    assert again.ledger == ckpt.ledger and again.rng_state == ckpt.rng_state and again.rows == ckpt.rows
