"""FedSA-LoRA, RoLoRA and FedSVD through the real ServerApp and ClientApp on tiny-llama (in process).

Every node's messages go through :class:`~tests.strategies.fake_grid.FakeGrid` with its own
persistent ``Context``; for FedSA the worker cache is emptied before every message, so each
message meets a freshly built model, as in a fresh worker process, and a client's ``B`` can only
come from its ``Context.state``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peft import PeftModel

import client.worker
from adapters.models import build_base_model
from adapters.payload import extract
from client.app import app as client_app
from client.factor_roles import STATE_LOCAL, RoundFactors
from contract import ARRAYS, CONFIG, SERVER_ROUND, parse_run_config
from server.app import run
from server.run_folder import read_rounds
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

SMALL = {**TINY_RUN, "train.local-steps": 2, "train.batch-size": 8, "eval.max-examples": 16}


def _ledger(path: Path) -> list[dict[str, Any]]:
    with (path / "ledger.csv").open() as f:
        return [{**row, "round": int(row["round"]), "bytes": int(row["bytes"])} for row in csv.DictReader(f)]


def _nbytes(arrays: dict[str, np.ndarray], layer: str) -> int:
    return sum(v.nbytes for k, v in arrays.items() if f".{layer}." in k)


@pytest.fixture(scope="module")
def fedsa_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    values = {**SMALL, "strategy.name": "fedsa", "output-dir": str(tmp_path_factory.mktemp("runs")),
              "fraction-evaluate": 0.25, "num-server-rounds": 2, "run-name": "fedsa"}  # 1 of 4 nodes evaluates
    completed: list[tuple[int, int, dict[str, np.ndarray]]] = []  # (round, node, whole payload loaded)
    stored: dict[tuple[int, int], dict[str, np.ndarray]] = {}  # (round, node) -> its B after the round
    original = RoundFactors.complete_spec

    def recording(self: RoundFactors, received, spec, *, personal=True):  # type: ignore[no-untyped-def]
        whole = original(self, received, spec, personal=personal)
        if personal:
            completed.append((current["round"], current["node"], {k: v.copy() for k, v in whole.items()}))
        return whole

    current: dict[str, int] = {}

    def fresh_process(message, context):  # type: ignore[no-untyped-def]
        client.worker._CACHE.clear()  # a new worker process: nothing survives but Context.state
        current.update(round=int(message.content[CONFIG][SERVER_ROUND]), node=context.node_id)
        reply = client_app(message, context)
        if message.metadata.message_type.startswith("train") and STATE_LOCAL in context.state:
            stored[(current["round"], context.node_id)] = {k: a.numpy().copy() for k, a in context.state[STATE_LOCAL].items()}
        return reply

    RoundFactors.complete_spec = recording  # type: ignore[method-assign]
    try:
        grid = FakeGrid(fresh_process, 4, run_config=values)  # 150 test rows per node
        folder = run(grid, parse_run_config(values))
    finally:
        RoundFactors.complete_spec = original  # type: ignore[method-assign]
    return {"grid": grid, "path": folder.path, "completed": completed, "stored": stored}


def test_fedsa_never_sends_b_in_payload_keys_or_ledger(fedsa_run: dict[str, Any]) -> None:
    grid, path = fedsa_run["grid"], fedsa_run["path"]
    whole = fedsa_run["completed"][0][2]
    a_bytes, b_bytes = _nbytes(whole, "lora_A"), _nbytes(whole, "lora_B")
    assert b_bytes > 0
    for instruction, reply in grid.log:
        assert not any(".lora_B." in k for k in instruction.content[ARRAYS].keys())
        assert any(".lora_A." in k for k in instruction.content[ARRAYS].keys())
        if reply.has_content() and ARRAYS in reply.content.array_records:
            assert not any(".lora_B." in k for k in reply.content[ARRAYS].keys())
    rows = [r for r in _ledger(path) if r["round"] >= 1]
    assert rows
    for row in rows:  # every metered message: A (+ records' overhead), never A and B
        assert row["bytes"] < a_bytes + b_bytes // 2, row


def test_fedsa_b_survives_in_context_state_across_fresh_worker_processes(fedsa_run: dict[str, Any]) -> None:
    grid, completed, stored = fedsa_run["grid"], fedsa_run["completed"], fedsa_run["stored"]
    for node in grid.node_ids:
        first = [w for r, n, w in completed if (r, n) == (1, node)][0]
        assert not any(np.any(v) for k, v in first.items() if ".lora_B." in k)  # round 1: B = 0
        second = [w for r, n, w in completed if (r, n) == (2, node)][0]
        own = stored[(1, node)]
        assert own and all(np.any(v) for v in own.values())  # trained, non-zero
        for key, value in own.items():
            np.testing.assert_array_equal(second[key], value)  # round 2 trains from its own round-1 B
        assert set(stored[(2, node)]) == set(own)  # bounded: one B per module, overwritten
    b_node0 = stored[(1, grid.node_ids[0])]
    b_node1 = stored[(1, grid.node_ids[1])]
    assert any(not np.array_equal(b_node0[k], b_node1[k]) for k in b_node0)  # each client's own


def test_fedsa_reports_personalised_and_global_scores(fedsa_run: dict[str, Any]) -> None:
    rows = read_rounds(fedsa_run["path"] / "rounds.jsonl")
    for row in rows[1:]:
        assert np.isfinite(row["fed_eval_personal_loss"]) and np.isfinite(row["fed_eval_loss"])
        assert np.isfinite(row["eval_loss"])  # central: Ā with B = 0
    # the personalised model is not the global one (its B is not zero)
    assert rows[-1]["fed_eval_personal_loss"] != rows[-1]["fed_eval_loss"]


def test_fedsa_exported_adapter_is_the_global_a_with_zero_b(fedsa_run: dict[str, Any]) -> None:
    base = build_base_model("tiny-llama", kind="causal-lm")
    exported = extract(PeftModel.from_pretrained(base.model, fedsa_run["path"] / "adapter"))
    assert all(not np.any(v) for k, v in exported.items() if ".lora_B." in k)
    assert any(np.any(v) for k, v in exported.items() if ".lora_A." in k)


def _plain_run(tmp_path: Path, name: str, rounds: int) -> tuple[FakeGrid, Path]:
    values = {**SMALL, "strategy.name": name, "output-dir": str(tmp_path), "num-server-rounds": rounds, "run-name": name}
    grid = FakeGrid(client_app, 2, run_config=values)
    return grid, run(grid, parse_run_config(values)).path


def test_rolora_alternates_and_moves_half_of_the_adapter_per_round(tmp_path: Path) -> None:
    grid, path = _plain_run(tmp_path, "rolora", rounds=3)
    whole = {k: v.numpy() for k, v in grid.log[0][0].content[ARRAYS].items()}  # round 1: everything
    full = sum(v.nbytes for v in whole.values())
    for instruction, reply in grid.log:
        server_round = int(instruction.content[CONFIG][SERVER_ROUND])
        trained = "lora_B" if server_round % 2 else "lora_A"
        keys = set(reply.content[ARRAYS].keys())
        assert keys and all(f".{trained}." in k for k in keys)
    ledger = _ledger(path)
    for server_round in (2, 3):
        messages = [(i, r) for i, r in grid.log if int(i.content[CONFIG][SERVER_ROUND]) == server_round]
        arrays = sum(a.numpy().nbytes for i, r in messages for rec in (i, r) for a in rec.content[ARRAYS].values())
        # FedIT moves the whole adapter down and up for both nodes, 4·full; RoLoRA exactly half of that
        assert arrays == 2 * full, (server_round, arrays, full)
        moved = sum(r["bytes"] for r in ledger if r["round"] == server_round)
        assert arrays <= moved < arrays + 4096 * len(messages) * 2  # the ledger: those arrays + record overhead
    rows = read_rounds(path / "rounds.jsonl")
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]


def test_fedsvd_sends_b_only_and_exports_an_orthonormal_a(tmp_path: Path) -> None:
    grid, path = _plain_run(tmp_path, "fedsvd", rounds=2)
    for instruction, reply in grid.log:
        assert any(".lora_A." in k for k in instruction.content[ARRAYS].keys())
        assert all(".lora_B." in k for k in reply.content[ARRAYS].keys())
    base = build_base_model("tiny-llama", kind="causal-lm")
    exported = extract(PeftModel.from_pretrained(base.model, path / "adapter"))
    a_keys = [k for k in exported if ".lora_A." in k]
    assert a_keys
    for key in a_keys:
        a = exported[key].astype(np.float64)  # (r, n)
        np.testing.assert_allclose(a @ a.T, np.eye(a.shape[0]), rtol=0, atol=1e-5)
    rows = read_rounds(path / "rounds.jsonl")
    assert rows[-1]["a_orthonormal_error"] < 1e-5


def test_fedsa_clients_score_on_test_rows_drawn_like_their_training_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/algorithms.md §14: personalised models are scored on each client's like-train test shard
    calls: list[str] = []
    local, iid = client.worker.Worker.local_test_rows, client.worker.Worker.test_rows
    monkeypatch.setattr(client.worker.Worker, "local_test_rows", lambda self, *a, **k: calls.append("local") or local(self, *a, **k))
    monkeypatch.setattr(client.worker.Worker, "test_rows", lambda self, *a, **k: calls.append("iid") or iid(self, *a, **k))
    for strategy, expected in (("fedsa", ["local", "iid"]), ("fedit", ["iid"])):  # tiny-llama's task has no labels
        calls.clear()
        values = {**SMALL, "strategy.name": strategy, "output-dir": str(tmp_path), "num-server-rounds": 1,
                  "fraction-evaluate": 1.0, "run-name": strategy, "train.local-steps": 1}
        run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values))
        assert calls == expected * 2, strategy  # one evaluate message per node
