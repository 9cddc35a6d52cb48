"""The deployment-speed benchmark's build count: every ClientApp process's builds and the worker's, per node."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from simulations.benchmarks.deploy_speed import _builds


def _line(pid: int, build: int) -> str:  # as client.worker.get_worker logs it
    return (f"INFO :      client worker (pid {pid}): built tiny-llama with lora adapters and the topics data in 1.20 s "
            f"(build {build} of this process)\n")


def test_builds_are_counted_per_node_once_each_from_the_clientapp_and_worker_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "superexec-clientapp-1.log").write_text("x\n" + _line(11, 1) + _line(12, 1))
    (logs / "node-worker-1.log").write_text(_line(13, 1) + _line(13, 2))  # a worker that built twice
    # node 2: every line printed twice (Flower's handler and a root handler a library installed): one build
    (logs / "node-worker-2.log").write_text(_line(21, 1) + _line(21, 1).replace("INFO :      ", "INFO:flwr:"))
    topo: Any = SimpleNamespace(root=tmp_path)
    assert _builds(topo, 3) == [4, 1, 0]  # node 3 has no logs at all
