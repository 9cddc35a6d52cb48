"""Flower-only reproduction: what a deployed round costs in Flower 1.42's process deployment, at zero work.

The app (``simulations/benchmarks/flower_echo_app``, no Corolla code) sends one ``train`` message to
every node a round and the ClientApp answers at once. It runs twice per ``--nodes`` value, with the
same Flower binaries Corolla's own benchmark uses:

* ``simulation``: ``flwr run`` on a local SuperLink with the Ray engine (warm actors);
* ``deployment``: the process deployment of ``simulations.deploy`` (TLS, SuperNode authentication,
  ``--isolation process``, one SuperExec per node): every message is a fresh ``flwr-clientapp``
  process that imports Flower, pulls its inputs from the SuperNode and pushes its reply.

The difference of the steady rounds is Flower's own price of a deployed round; Corolla's deployed
round (``deploy_speed``, warm node workers) cannot go below it without patching Flower.
``docs/scaling.md §3`` has the numbers. Usage::

    python -m simulations.benchmarks.flower_process_repro [--nodes 2 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from simulations.benchmarks._output import write_result
from simulations.benchmarks.scale import isolated_env, shutdown
from simulations.deploy import CONNECTION, Topology
from simulations.flower_env import flower_env
from simulations.launch import launch

ECHO_APP = Path(__file__).resolve().parent / "flower_echo_app"


def steady(round_s: list[float]) -> float:
    """The mean round after the first (the first pays start-ups)."""
    rest = round_s[1:] or round_s
    return sum(rest) / len(rest)


def measure(mode: str, nodes: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """One run of the echo app; its round times (raises if it did not complete)."""
    out = tmp / f"{mode}-{nodes}.json"
    values = {"rounds": rounds, "nodes": nodes, "out": str(out)}
    started = time.perf_counter()
    if mode == "simulation":
        home = tmp / f"home-{nodes}"
        try:
            result = launch(ECHO_APP, values, num_supernodes=nodes, env=isolated_env(home), echo=False)
        finally:
            shutdown(str(home))
    else:
        with Topology(tmp / f"deploy-{nodes}", nodes=nodes, env=flower_env(managed=False, threads=1)) as topo:
            topo.start(timeout=300)
            started = time.perf_counter()
            result = launch(ECHO_APP, values, num_supernodes=nodes, connection=CONNECTION, env=topo.cli_env(), echo=False)
    if not result.ok or not out.is_file():
        raise RuntimeError(f"{mode}, {nodes} nodes: run {result.run_id} ended {result.status}\n{result.output[-2000:]}")
    round_s = [round(s, 3) for s in json.loads(out.read_text())["round_s"]]
    return {"mode": mode, "nodes": nodes, "round_s": round_s, "steady_round_s": round(steady(round_s), 3),
            "run_wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/flower_process_repro.json"))
    args = parser.parse_args(argv)
    cells: list[dict[str, Any]] = []
    result = {"benchmark": "flower_process_repro", "flwr": __import__("flwr").__version__, "cells": cells}
    print(f"{'nodes':>5} {'simulated round s':>18} {'deployed round s':>17} {'difference s':>13}", flush=True)
    with tempfile.TemporaryDirectory(prefix="corolla-flower-process-") as tmp:
        for nodes in args.nodes:
            sim, dep = (measure(mode, nodes, args.rounds, Path(tmp)) for mode in ("simulation", "deployment"))
            cells.append({"nodes": nodes, "simulation": sim, "deployment": dep,
                          "difference_s": round(dep["steady_round_s"] - sim["steady_round_s"], 3)})
            print(f"{nodes:>5} {sim['steady_round_s']:>18.3f} {dep['steady_round_s']:>17.3f} {cells[-1]['difference_s']:>13.3f}",
                  flush=True)
            write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
