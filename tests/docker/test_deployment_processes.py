"""The Docker deployment's topology as real processes on loopback (no Docker engine needed).

One SuperLink (TLS, SuperNode authentication, ``--isolation process``, no runtime installs) with
its ServerApp SuperExec; two SuperNodes, each with its own registered ECDSA P-384 key, its own
partition (node config) and its own SuperExec over a TLS Runtime API; every Runtime API behind a
SuperExec secret of its own. Certificates and keys come from ``docker/make-certs.sh``, the script the
Docker deployment uses. Then ``flwr run . corolla-deploy`` with tiny-llama for 2 rounds.

Traffic: Flower's ``network-traffic`` counts what crosses the SuperLink's Fleet API
(``flwr/superlink/servicer/fleet/fleet_handlers.py``): the protobuf size of PullMessages and
PushMessages requests and responses (message metadata and object trees, and the ``objects_to_push``
id list a push is answered with) plus the byte length of every object pulled or pushed (each
array's npy bytes in ``ArrayChunk`` objects, plus ``Array`` metadata objects, headers and the
records' key -> object-id maps). Two differences from the metered bytes follow:

* framing: about 520 bytes per array per message, 8.3 KB for a 16-array tiny-llama reply, the same
  at any rank; so the comparison runs at rank 32, where the payload (about 460 KB per message)
  dominates;
* deduplication: objects are content-addressed, and identical arrays inside one message cross the
  wire once. The initial adapter's zero-initialised LoRA B matrices of equal shape are identical,
  so round 1's downlink is smaller than its metered size by those duplicates (computed here from
  the same initial adapter the ServerApp builds).

With both accounted for, each direction agrees within 5%.
"""

from __future__ import annotations

import csv
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from simulations.deploy import CONNECTION, Component, Topology, free_port, make_certs
from simulations.flower_env import flower_env
from simulations.launch import LaunchResult, find_app_dir, launch

pytestmark = pytest.mark.slow

NODES = 2
RANK = 32  # payload dominates Flower's per-array framing (see the module docstring)
RUN_TIMEOUT_S = 300
RUN: dict[str, Any] = {
    "strategy.name": "fedit",  # the dedup accounting below is FedIT's initial adapter (zero B matrices)
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 2,
    "eval.max-examples": 32,
    "adapter.rank": RANK,
    "min-train-nodes": NODES,
    "run-name": "deploy",
}


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    env = flower_env(managed=False, threads=1)
    topo = Topology(tmp_path_factory.mktemp("deploy"), nodes=NODES, env=env)
    try:
        topo.start(timeout=90)
        yield topo
    finally:
        topo.stop()


@pytest.fixture(scope="module")
def completed_run(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaunchResult, Path, float]:
    out = tmp_path_factory.mktemp("runs")
    # `launch` has no timeout of its own: a watchdog stops the topology, which ends `flwr run`
    watchdog = threading.Timer(RUN_TIMEOUT_S, topology.stop)
    watchdog.start()
    started = time.monotonic()
    try:
        result = launch(
            find_app_dir(), {**RUN, "output-dir": str(out)}, num_supernodes=NODES,
            connection=CONNECTION, env=topology.cli_env(), echo=False,
        )
    finally:
        watchdog.cancel()
    return result, out / "deploy", time.monotonic() - started


def run_info(topology: Topology, run_id: int) -> dict[str, Any]:
    """``flwr ls --run-id`` against the topology, as JSON: status, ``network-traffic``, ..."""
    out = topology.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
    runs = json.loads(out.stdout[out.stdout.index("{"):]).get("runs", [])
    assert runs, f"run {run_id} not listed: {out.stdout}{out.stderr}"
    return dict(runs[0])


def wait_exit(component: Component, *, timeout: float) -> int | None:
    """The exit code of ``component`` once it exits, or None if still running after ``timeout``."""
    try:
        return component.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _ledger(folder: Path) -> list[dict[str, str]]:
    with (folder / "ledger.csv").open() as handle:
        return list(csv.DictReader(handle))


def _initial_duplicate_bytes() -> int:
    """npy bytes of the arrays in the ServerApp's initial adapter that repeat an earlier, identical
    array: Flower sends those once per message (content-addressed objects)."""
    from flwr.app import Array

    from adapters.payload import extract
    from client.tasks.setup import build_task_and_model
    from contract import parse_run_config
    from server.adapter_setup import resolve_run_adapter_kind

    config = parse_run_config({**RUN, "output-dir": "/unused"})
    model = build_task_and_model(config, resolve_run_adapter_kind(config)).model
    seen: set[str] = set()
    duplicate = 0
    for value in extract(model).values():
        array = Array(value)
        if array.object_id in seen:
            duplicate += len(array.data)
        seen.add(array.object_id)
    return duplicate


def test_run_completes_over_tls_with_authenticated_nodes(
    topology: Topology, completed_run: tuple[LaunchResult, Path, float]
) -> None:
    result, folder, wall = completed_run
    print(f"\nrun {result.run_id}: {result.status} in {wall:.1f} s")
    assert result.run_id is not None, result.output[-3000:]
    info = run_info(topology, result.run_id)  # the status from `flwr ls`, not flwr run's exit code
    assert info["status"] == "finished:completed", result.output[-3000:]
    assert result.ok
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["clients"] == NODES and r["dropped"] == 0 for r in rounds[1:])
    ledger = _ledger(folder)
    assert len(ledger) == 2 * NODES * 2  # rounds x nodes x directions
    assert len({r["node"] for r in ledger}) == NODES
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"] == RANK
    assert (folder / "summary.json").is_file()
    # every SuperNode answered each round, through a ClientApp its own SuperExec started
    logs = topology.root / "logs"
    for i in range(1, NODES + 1):
        assert (logs / f"supernode-{i}.log").read_text().count("Sending: train message") == 2
        assert (logs / f"superexec-clientapp-{i}.log").read_text().count("Start `flwr-clientapp` process") == 2


def test_metered_bytes_agree_with_flower_traffic(
    topology: Topology, completed_run: tuple[LaunchResult, Path, float]
) -> None:
    result, folder, _ = completed_run
    assert result.run_id is not None
    traffic = run_info(topology, result.run_id)["network-traffic"]
    ledger = _ledger(folder)
    down = sum(int(r["bytes"]) for r in ledger if r["direction"] == "down")
    up = sum(int(r["bytes"]) for r in ledger if r["direction"] == "up")
    inbound, outbound = int(traffic["inbound-bytes"]), int(traffic["outbound-bytes"])
    duplicates = NODES * _initial_duplicate_bytes()  # round 1: every node's copy of the initial adapter
    down_unique = down - duplicates
    messages = len(ledger) // 2
    print(
        f"\nmetered up {up} B vs Flower inbound {inbound} B: ratio {inbound / up:.4f} "
        f"({(inbound - up) / messages:.0f} B framing per message)"
        f"\nmetered down {down} B (of which {duplicates} B duplicate arrays Flower sends once) "
        f"vs Flower outbound {outbound} B: raw ratio {outbound / down:.4f}, "
        f"deduplicated ratio {outbound / down_unique:.4f} ({(outbound - down_unique) / messages:.0f} B framing per message)"
    )
    # Flower counts the payload plus framing: never less, and within 5% at this payload size
    assert up <= inbound <= 1.05 * up
    assert down_unique <= outbound <= 1.05 * down_unique


def test_unregistered_supernode_is_refused(topology: Topology, tmp_path: Path) -> None:
    make_certs(tmp_path, 1)  # a fresh key pair that was never registered
    node = topology.start_supernode(
        1, port=free_port(), name="unregistered", key=tmp_path / "keys" / "supernode-1", max_wait_time=20
    )
    code = wait_exit(node, timeout=60)
    log = node.log_text()
    assert code not in (None, 0), log
    assert "Exit Code: 305" in log and "Failed to activate SuperNode" in log, log
    superlink_log = (topology.root / "logs" / "superlink.log").read_text()
    assert "No SuperNode found with the given public key" in superlink_log


def test_supernode_trusting_a_wrong_ca_fails_to_connect(topology: Topology, tmp_path: Path) -> None:
    make_certs(tmp_path, 1)  # another CA: the SuperLink's certificate does not chain to it
    node = topology.start_supernode(
        1, port=free_port(), name="wrong-ca", ca=tmp_path / "certs" / "ca.crt", max_wait_time=20
    )
    code = wait_exit(node, timeout=60)
    log = node.log_text()
    assert code not in (None, 0), log
    assert "CERTIFICATE_VERIFY_FAILED" in log and "Exit Code: 305" in log, log


def test_stop_ends_every_process_and_its_children(tmp_path: Path) -> None:
    topo = Topology(tmp_path, nodes=1)
    try:
        topo.start(timeout=90)
        started = [psutil.Process(c.proc.pid) for c in topo.components]
        family = started + [child for p in started for child in p.children(recursive=True)]
        assert len(started) == 4  # SuperLink, its SuperExec, one SuperNode, its SuperExec
    finally:
        topo.stop()
    assert not [p for p in family if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


SECAGG_TIMEOUT_S = 900  # one round is five messages per node, each a fresh ClientApp process (imports, model build)
SECAGG_RUN: dict[str, Any] = {
    "strategy.name": "fedsb",
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 1,
    "eval.max-examples": 32,
    "adapter.rank": 4,
    "min-train-nodes": NODES,
    "secagg.enabled": True,
    "run-name": "deploy-secagg",
}


def test_secagg_run_over_tls_with_authenticated_nodes(topology: Topology, tmp_path: Path) -> None:
    """SecAgg+ through the deployment: every stage is a message to a ClientApp process its node's
    SuperExec starts, so a node's round secrets live only in ``Context.state`` between stages."""
    watchdog = threading.Timer(SECAGG_TIMEOUT_S, topology.stop)
    watchdog.start()
    try:
        result = launch(find_app_dir(), {**SECAGG_RUN, "output-dir": str(tmp_path)}, num_supernodes=NODES,
                        connection=CONNECTION, env=topology.cli_env(), echo=False)
    finally:
        watchdog.cancel()
    assert result.run_id is not None, result.output[-3000:]
    assert run_info(topology, result.run_id)["status"] == "finished:completed", result.output[-3000:]
    folder = tmp_path / "deploy-secagg"
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["clients"] == NODES and rounds[1]["dropped"] == 0
    summary = json.loads((folder / "summary.json").read_text())
    block = summary["secagg"]
    assert block["rounds_dropped"] == 0 and block["masked"] == ["update (payload - global)", "num-examples", "train_loss"]
    assert block["mean_error_bound"] == pytest.approx(2 / (2**22 - 1))
    assert "partition-id" in block["not_sent"]
    phases = {(r["phase"], r["direction"]) for r in _ledger(folder)}
    for phase in ("secagg-setup", "secagg-share-keys", "secagg-collect", "secagg-unmask"):
        assert {(phase, "down"), (phase, "up")} <= phases
    assert ("train", "up") not in phases  # no plaintext update crossed the SuperLink
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
