"""A SuperNode killed and restarted between rounds, in the process deployment (slow: minutes).

The Docker topology as processes (``simulations.deploy.Topology``: TLS, SuperNode authentication,
``--isolation process``). A Fed-SB run with DP over 3 rounds; once round 1 is recorded, SuperNode 1
is stopped (SIGTERM) and its SuperExec killed, then both are started again (retried, as compose's
``restart: unless-stopped`` does) with the same key, the same ``state-dir`` and the node's own
Runtime API secret. Flower keeps ``Context.state`` in the SuperNode's memory, so the new node has
lost its frozen factors and the in-memory copy of its accountant history.

What happens (observed at the previous attempt, and what is asserted): the node misses the round
that starts while it is down (the SuperLink answers that message with an error; the server's ε
ledger counts the round against it), then replies "state missing" to its next instruction, gets
its frozen factors resent within that round (booked as set-up traffic a second time, for that node
only) and is aggregated; its accountant restores its history from disk, so the ε it reports equals
the server's independent bound for every round it trained, not a count restarted at zero.
The in-process restart (``tests/server/test_node_restart.py``) is in the default suite.
"""


from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from client.tasks.setup import build_task_and_model
from contract import parse_run_config
from server.epsilon_bound import EpsilonBound
from simulations.deploy import CONNECTION, Topology, free_port
from simulations.flower_env import flower_env
from simulations.launch import LaunchResult, find_app_dir, launch

pytestmark = pytest.mark.slow  # passed here in 202 s and 164 s at load 6-9

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
    assert rows[1]["clients"] == 2 and rows[3]["clients"] == 2, rows  # both before the restart, and at the end
    with (folder / "ledger.csv").open() as handle:
        ledger = list(csv.DictReader(handle))
    setup = Counter(r["node"] for r in ledger if r["phase"] == "setup")
    assert sorted(setup.values()) == [1, 2], setup  # the factors again, once, for the restarted node only
    (restarted,) = [node for node, count in setup.items() if count == 2]
    resent = [int(r["round"]) for r in ledger if r["phase"] == "setup" and r["node"] == restarted]
    assert resent[0] == 1 and resent[1] > 1
    trained = {node: {int(r["round"]) for r in ledger if r["node"] == node and r["phase"] == "train" and r["direction"] == "up"}
               for node in setup}
    assert len(trained[restarted]) >= 2 and max(trained[restarted]) > resent[0]  # it trained again after the restart
    # its accountant went on from its history on disk: the ε it reports is that of every round it trained,
    # computed independently by the server's bound (bit for bit the client's accountant, docs/privacy.md §10);
    # a restarted count would report the ε of the rounds after the restart only
    config = parse_run_config({**RUN, "output-dir": str(out)})
    bound = EpsilonBound(config, build_task_and_model(config, "lora-sb"), num_partitions=2)
    entries = {str(e["node"]): e for e in json.loads((folder / "summary.json").read_text())["privacy"]["nodes"]}
    assert set(entries) == set(setup) and all(e["unreported"] == 0 for e in entries.values()), entries
    for node, entry in entries.items():
        assert entry["reported"] == pytest.approx(bound(entry["partition"], len(trained[node])), rel=1e-12), node
    assert (tmp_path / "deploy" / "node-state" / "1").is_dir()
