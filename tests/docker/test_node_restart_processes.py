"""A SuperNode killed and restarted between rounds, in the process deployment (opt-in: ``-m restart``).

Not yet seen passing, so it stays out of CI's ``-m slow`` under its own marker. Last observed (this
version: SIGTERM, restart retried as compose's restart policy does, the node's own Runtime API secret):
the node came back with the same node id, lost round 2 (the SuperLink answered its round-2 message with
an error while it was down; the server charged it its ε bound), and in round 3 replied "state missing",
got its frozen factors resent in the same round and was aggregated, so the assertions below on round 2
do not yet hold. The in-process restart (``tests/server/test_node_restart.py``) is in the default suite.

The Docker topology as processes (``simulations.deploy.Topology``: TLS, SuperNode authentication,
``--isolation process``). A Fed-SB run with DP over 3 rounds; once round 1 is recorded, SuperNode 1
and its SuperExec are killed (SIGKILL) and started again with the same key and the same
``state-dir``. Flower keeps ``Context.state`` in the SuperNode's memory, so the new node has lost its
frozen factors and its accountant history's in-memory copy: the server resends the factors in round 2
(booked as set-up traffic a second time, for that node only) and the node restores its history from
disk, so its ε after 3 rounds equals the other node's (equal IID shards), not a restarted count.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from simulations.deploy import CONNECTION, Topology, free_port
from simulations.flower_env import flower_env
from simulations.launch import LaunchResult, find_app_dir, launch

pytestmark = pytest.mark.restart

RUN_TIMEOUT_S = 900
RUN: dict[str, Any] = {
    "strategy.name": "fedsb",
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 3,
    "train.local-steps": 2,
    "train.batch-size": 8,
    "adapter.rank": 4,
    "data.partitioner": "iid",
    "eval.max-examples": 16,
    "min-train-nodes": 2,
    "round-timeout": 240,
    "privacy.enabled": True,
    "privacy.noise-multiplier": 0.8,
    "run-name": "restart",
}


def _wait_round(rounds: Path, server_round: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rounds.is_file() and any(json.loads(line)["round"] == server_round for line in rounds.read_text().splitlines() if line):
            return
        time.sleep(0.05)
    raise TimeoutError(f"round {server_round} not recorded in {rounds} after {timeout:.0f} s")


def test_a_restarted_supernode_keeps_its_epsilon_and_gets_its_frozen_factors_back(tmp_path: Path) -> None:
    topo = Topology(tmp_path / "deploy", nodes=2, env=flower_env(managed=False, threads=1))
    out = tmp_path / "runs"
    box: dict[str, LaunchResult] = {}
    with topo:
        topo.start(timeout=120)
        watchdog = threading.Timer(RUN_TIMEOUT_S, topo.stop)
        watchdog.start()
        runner = threading.Thread(target=lambda: box.update(result=launch(
            find_app_dir(), {**RUN, "output-dir": str(out)}, num_supernodes=2, connection=CONNECTION,
            env=topo.cli_env(), echo=False,
        )))
        runner.start()
        try:
            _wait_round(out / "restart" / "rounds.jsonl", 1, timeout=RUN_TIMEOUT_S)
            # SIGTERM: the SuperNode deactivates itself, so the SuperLink takes the same key again at once (after a
            # SIGKILL it refuses to activate the key, exit code 305, until the old session's heartbeat expires)
            for name, sig in (("supernode-1", signal.SIGTERM), ("superexec-clientapp-1", signal.SIGKILL)):
                (component,) = [c for c in topo.components if c.name == name]
                os.killpg(component.proc.pid, sig)
                component.proc.wait(timeout=30)
            port = free_port(topo.host)
            for attempt in range(60):  # as compose's `restart: unless-stopped` does
                node = topo.start_supernode(1, port=port, name=f"supernode-1-restarted-{attempt}")
                time.sleep(3)
                if node.alive():
                    break
            topo.start_superexec("superexec-clientapp-1-restarted", f"{topo.host}:{port}", ca=topo.certs / "ca.crt",
                                 runtime_api="1")
            runner.join(timeout=RUN_TIMEOUT_S)
        finally:
            watchdog.cancel()
    result = box["result"]
    assert result.ok, result.output[-3000:]
    folder = out / "restart"
    rows = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert all((r["clients"], r["dropped"], r["timed_out"]) == (2, 0, 0) for r in rows[1:]), rows
    with (folder / "ledger.csv").open() as handle:
        setup = [(int(r["round"]), r["node"]) for r in csv.DictReader(handle) if r["phase"] == "setup"]
    nodes = {node for _, node in setup}
    assert len(nodes) == 2 and sorted(rnd for rnd, _ in setup) == [1, 1, 2]  # the factors again, once, in round 2
    summary = json.loads((folder / "summary.json").read_text())["privacy"]
    entries = summary["nodes"]
    assert len(entries) == 2 and all(e["rounds"] == 3 and e["unreported"] == 0 for e in entries)
    # equal IID shards and the same rounds: the restarted node's accountant went on from round 1
    assert entries[0]["reported"] == pytest.approx(entries[1]["reported"], rel=1e-12)
    assert (tmp_path / "deploy" / "node-state" / "1").is_dir()
