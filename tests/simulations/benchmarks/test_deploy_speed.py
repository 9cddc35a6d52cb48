"""The deployment-speed benchmark's build count: every ClientApp process's builds and the worker's, per node."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from simulations.benchmarks.deploy_speed import BUILD_LINE, _builds


def test_builds_are_counted_per_node_from_the_clientapp_and_worker_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "superexec-clientapp-1.log").write_text(f"x\n{BUILD_LINE} 11) built\n{BUILD_LINE} 12) built\n")
    (logs / "node-worker-1.log").write_text(f"{BUILD_LINE} 13) built\n")
    (logs / "superexec-clientapp-2.log").write_text("no build here\n")  # node 2: a warm worker that never logged
    topo: Any = SimpleNamespace(root=tmp_path)
    assert _builds(topo, 3) == [3, 0, 0]  # node 3 has no logs at all
