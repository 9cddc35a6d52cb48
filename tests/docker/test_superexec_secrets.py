"""Each Runtime API has its own SuperExec secret: a SuperExec holding another node's is refused (slow).

The Docker topology as processes (``simulations.deploy.Topology``: TLS, SuperNode authentication,
one ``superexec-secret-<i>`` per Runtime API). Node 2's own SuperExec is stopped and one holding
node 1's secret (as a compromised node-1 machine would) is pointed at node 2's Runtime API: the
SuperNode refuses it before it can acquire a task (so it never sees the run's messages or node 2's
``Context.state``), and it exits. docker/README.md "Threat model".
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from simulations.deploy import Topology
from simulations.flower_env import flower_env

pytestmark = pytest.mark.slow

REFUSED = "SuperExec authentication failed"


def test_a_superexec_with_another_nodes_secret_is_refused_by_the_supernode(tmp_path: Path) -> None:
    topo = Topology(tmp_path / "deploy", nodes=2, env=flower_env(managed=False, threads=1))
    with topo:
        topo.start(timeout=180)
        (own,) = [c for c in topo.components if c.name == "superexec-clientapp-2"]
        os.killpg(own.proc.pid, signal.SIGKILL)
        own.proc.wait(timeout=30)
        node_log = tmp_path / "deploy" / "logs" / "supernode-2.log"
        assert REFUSED not in node_log.read_text()  # node 2's own SuperExec was accepted
        impostor = topo.start_superexec("impostor", f"{topo.host}:{topo.node_ports[1]}", ca=topo.certs / "ca.crt",
                                        runtime_api="1")  # node 1's secret at node 2's Runtime API
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (impostor.proc.poll() is None or REFUSED not in node_log.read_text()):
            time.sleep(0.5)
        log = node_log.read_text()
        assert REFUSED in log and "AcquireTask" in log, log[-2000:]
        assert impostor.proc.poll() is not None, "the SuperExec with the wrong secret is still running"
        assert "Starting Flower SuperExec" in impostor.log.read_text()  # it really started and connected
        (other,) = [c for c in topo.components if c.name == "supernode-1"]
        assert REFUSED not in other.log.read_text()
