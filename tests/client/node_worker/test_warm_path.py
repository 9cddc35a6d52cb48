"""The whole ServerApp over the in-process grid, each node's ClientApp forwarding to a node worker on a
real Unix socket: the run equals the in-process run bit for bit. The combinations cover what the
ClientApp keeps in ``Context.state`` and must get back from the worker: FedEx-LoRA's base versions
with DP-SGD's accountant history, and Fed-SB's frozen factors and gradient estimate with SecAgg's
round secrets (bytes in config records). SecAgg quantises with Flower's stochastic rounding, which
draws from NumPy's unseeded global generator, so two SecAgg runs agree within the quantisation bound
``2c/(2^b - 1)``, not bit for bit, on either path."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from client.app import app as local_app
from client.entry import app as client_app
from client.node_worker.channel import WORKER_SOCKET
from client.node_worker.service import NodeWorker
from contract import parse_run_config
from server.app import run
from server.run_folder import read_rounds
from tests.strategies.fake_grid import FakeGrid

NODES = 2
RUN = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 2,
    "train.local-steps": 2,
    "train.batch-size": 8,
    "adapter.rank": 4,
    "data.partitioner": "iid",
    "eval.max-examples": 16,
    "min-train-nodes": NODES,
}
CASES = {
    "fedex-dp": {"strategy.name": "fedex", "privacy.enabled": True, "privacy.noise-multiplier": 0.5},
    "fedsb": {"strategy.name": "fedsb"},
    "fedsb-secagg": {"strategy.name": "fedsb", "secagg.enabled": True, "num-server-rounds": 1},
}


@pytest.fixture(scope="module")
def workers() -> Iterator[list[NodeWorker]]:
    folder = Path(tempfile.mkdtemp(prefix="corolla-nw-", dir="/tmp"))
    nodes = [NodeWorker(folder / f"node-{i}.sock", local_app) for i in range(NODES)]
    threads = []
    for node in nodes:
        node.start()
        threads.append(threading.Thread(target=node.serve, daemon=True))
        threads[-1].start()
    yield nodes
    for node, thread in zip(nodes, threads, strict=True):
        node.close()
        thread.join(timeout=5)
    shutil.rmtree(folder, ignore_errors=True)


def _run(tmp: Path, name: str, overrides: dict[str, Any], workers: list[NodeWorker] | None) -> tuple[Path, FakeGrid]:
    values = {**RUN, **overrides, "output-dir": str(tmp), "run-name": name}
    grid = FakeGrid(client_app, NODES, run_config=values)
    for i, node in enumerate(grid.node_ids):
        if workers is not None:
            grid.contexts[node].node_config[WORKER_SOCKET] = str(workers[i].path)
    return run(grid, parse_run_config(values)).path, grid


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_warm_path_equals_the_in_process_path(tmp_path: Path, workers: list[NodeWorker], case: str) -> None:
    before = [w.requests for w in workers]
    cold, _ = _run(tmp_path, f"{case}-cold", CASES[case], None)
    assert [w.requests for w in workers] == before
    warm, grid = _run(tmp_path, f"{case}-warm", CASES[case], workers)
    served = [w.requests - b for w, b in zip(workers, before, strict=True)]
    delivered = [sum(msg.metadata.dst_node_id == node for msg, _ in grid.log) for node in grid.node_ids]
    assert served == delivered and min(delivered) >= 1  # every message of the run went through its node's worker
    adapter = Path("adapter") / "adapter_model.safetensors"
    if case.endswith("secagg"):
        a, b = load_file(str(cold / adapter)), load_file(str(warm / adapter))
        worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)
        assert a.keys() == b.keys() and worst < 2 * 1.0 / (2**22 - 1) + 1e-6  # one round: the quantisation only
        assert [r["clients"] for r in read_rounds(warm / "rounds.jsonl")] == [r["clients"] for r in read_rounds(cold / "rounds.jsonl")]
        return
    assert (warm / adapter).read_bytes() == (cold / adapter).read_bytes()
    strip = ("time", "wall", "seconds")
    rows = [[{k: v for k, v in r.items() if not any(s in k for s in strip)} for r in read_rounds(f / "rounds.jsonl")]
            for f in (cold, warm)]
    assert rows[0] == rows[1]
    assert rows[1][-1]["clients"] == NODES
