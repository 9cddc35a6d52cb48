"""Warm node workers in the process deployment (TLS, SuperNode authentication; slow).

Two SuperNodes, each with its warm worker (``python -m client.node_worker``) and ``worker-socket`` in
its node config: a two-round run builds the model exactly once per node (in the worker; the
ClientApp processes only forward), the workers' sockets are private to the user, and the result is
the one the cold path gives: the same run again after the workers are stopped (every ClientApp
process falls back to in-process work, says so once per node, and builds the model itself) ends
with the same adapter, byte for byte.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulations.deploy import CONNECTION, Topology
from simulations.flower_env import flower_env
from simulations.launch import LaunchResult, find_app_dir, launch

pytestmark = pytest.mark.slow

NODES = 2
RUN_TIMEOUT_S = 900
RUN: dict[str, Any] = {
    "strategy.name": "fedsb",  # frozen factors sent once (server-side init), then train rounds
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 2,
    "eval.max-examples": 32,
    "adapter.rank": 4,
    "min-train-nodes": NODES,
}
BUILD_LINE = "client worker (pid"  # client.worker logs one per model build
FALLBACK_LINE = "is unavailable"  # client.app says so once per node and run


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topo = Topology(tmp_path_factory.mktemp("warm"), nodes=NODES, env=flower_env(managed=False, threads=1), warm_workers=True)
    try:
        topo.start(timeout=90)
        yield topo
    finally:
        topo.stop()


def _launch(topo: Topology, out: Path, name: str) -> tuple[LaunchResult, Path]:
    watchdog = threading.Timer(RUN_TIMEOUT_S, topo.stop)
    watchdog.start()
    try:
        result = launch(find_app_dir(), {**RUN, "output-dir": str(out), "run-name": name}, num_supernodes=NODES,
                        connection=CONNECTION, env=topo.cli_env(), echo=False)
    finally:
        watchdog.cancel()
    assert result.ok, result.output[-3000:]
    return result, out / name


def _log(topo: Topology, name: str) -> str:
    return (topo.root / "logs" / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def runs(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("runs")
    _, warm = _launch(topology, out, "warm")
    counts = {i: (_log(topology, f"superexec-clientapp-{i}").count(BUILD_LINE),
                  _log(topology, f"superexec-clientapp-{i}").count("Start `flwr-clientapp` process")) for i in (1, 2)}
    status = {i: topology.worker_status(i) for i in (1, 2)}
    modes = {i: topology.worker_socket(i).stat() for i in (1, 2)}
    topology.stop_node_workers()
    _, cold = _launch(topology, out, "cold")
    return {"warm": warm, "cold": cold, "warm_counts": counts, "status": status, "modes": modes}


def test_one_model_build_per_node_with_warm_workers(topology: Topology, runs: dict[str, Any]) -> None:
    for i in (1, 2):
        status, (clientapp_builds, clientapps) = runs["status"][i], runs["warm_counts"][i]
        assert status["model_builds"] == 1, status
        assert status["requests"] == clientapps == RUN["num-server-rounds"], (status, clientapps)  # one train message a round
        assert status["refused"] == 0
        assert clientapp_builds == 0  # the ClientApp processes only forwarded
        assert _log(topology, f"node-worker-{i}").count(BUILD_LINE) == 1


def test_the_worker_sockets_are_private_to_the_nodes_user(runs: dict[str, Any]) -> None:
    for info in runs["modes"].values():
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()


def test_the_cold_path_gives_the_same_run_and_says_it_fell_back_once(topology: Topology, runs: dict[str, Any]) -> None:
    adapter = Path("adapter") / "adapter_model.safetensors"
    assert (runs["warm"] / adapter).read_bytes() == (runs["cold"] / adapter).read_bytes()
    rows = {name: [json.loads(line) for line in (runs[name] / "rounds.jsonl").read_text().splitlines()] for name in ("warm", "cold")}
    keep = ("round", "clients", "dropped", "train_loss", "eval_loss", "eval_accuracy", "bytes_up", "bytes_down")
    assert [{k: r.get(k) for k in keep} for r in rows["warm"]] == [{k: r.get(k) for k in keep} for r in rows["cold"]]
    for i in (1, 2):
        log = _log(topology, f"superexec-clientapp-{i}")
        started = log.count("Start `flwr-clientapp` process") - runs["warm_counts"][i][1]
        assert log.count(FALLBACK_LINE) == 1  # once per node and run, not once per ClientApp process
        assert log.count(BUILD_LINE) == started == RUN["num-server-rounds"]  # cold: every ClientApp process built the model
