"""Deployment speed: the process deployment, cold and with warm node workers, against the Ray simulation.

Three runs of the same configuration (default task and model unless overridden, ``--rounds`` rounds,
``--nodes`` clients), one after the other in one invocation so that their ratios compare like with like:

* ``simulation``: ``flwr run`` on Corolla's managed SuperLink with the Ray engine and ``--nodes``
  virtual SuperNodes (the path ``corolla run`` takes);
* ``deploy-cold``: the process deployment of ``simulations.deploy`` (TLS, SuperNode authentication,
  ``--isolation process``) with ``--nodes`` SuperNodes: every message is a fresh ClientApp process
  that imports the handlers and builds the model and data;
* ``deploy-warm``: the same with a warm node worker per SuperNode (``docs/scaling.md §3``).

Reported per run: wall time of each round (the ServerApp's ``wall_s`` in ``rounds.jsonl``; round 1
includes the one-time model build and the gradient estimate of Fed-SB), the steady-state round (the
mean of rounds 2..N) and its ratio to the simulation's, model builds per node (counted from the
``client worker (pid ...) built`` lines every build logs: in each SuperExec's log for the ClientApp
processes, in each worker's log), the final accuracy, and for ``deploy-warm`` the time until the
workers listened (paid once when a node starts, not per run). Usage::

    python -m simulations.benchmarks.deploy_speed [--nodes 2] [--rounds 3] [--modes simulation deploy-cold deploy-warm]
        [--set key=value ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from server.run_folder import read_rounds
from simulations.benchmarks._output import write_result
from simulations.deploy import CONNECTION, Topology
from simulations.flower_env import flower_env
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides

MODES = ("simulation", "deploy-cold", "deploy-warm")
BUILD_LINE = re.compile(r"client worker \(pid (\d+)\): built .*?\(build (\d+) of this process\)")  # client.worker


def _builds(topo: Topology, nodes: int) -> list[int]:
    """Model builds per node: every ClientApp process's and the worker's, each counted once by its
    ``(pid, build number)`` (a library that logs through the root logger makes Flower's handler print
    every line twice)."""
    logs = topo.root / "logs"
    counts = []
    for i in range(1, nodes + 1):
        names = [f"superexec-clientapp-{i}.log", f"node-worker-{i}.log"]
        builds = {match.groups() for n in names if (logs / n).is_file()
                  for match in BUILD_LINE.finditer((logs / n).read_text(errors="replace"))}
        counts.append(len(builds))
    return counts


def run_mode(mode: str, app: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One run; raises if it did not complete."""
    extra = {**args.overrides, "num-server-rounds": args.rounds, "min-train-nodes": args.nodes,
             "output-dir": str(tmp / "runs"), "run-name": mode}
    _, flat = resolve_config(app, [toml_overrides(extra)])
    out: dict[str, Any] = {"mode": mode}
    started = time.perf_counter()
    if mode == "simulation":
        result = launch(app, flat, num_supernodes=args.nodes, echo=False)
        builds: list[int] | None = None
    else:
        topo = Topology(tmp / mode, nodes=args.nodes, env=flower_env(managed=False, threads=1),
                        warm_workers=mode == "deploy-warm")
        try:
            topo.start(timeout=300)
            out["topology_start_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            result = launch(app, flat, num_supernodes=args.nodes, connection=CONNECTION, env=topo.cli_env(), echo=False)
            builds = _builds(topo, args.nodes)
        finally:
            topo.stop()
    out["run_wall_s"] = round(time.perf_counter() - started, 1)
    if not result.ok:
        raise RuntimeError(f"{mode}: run {result.run_id} ended {result.status}\n{result.output[-2000:]}")
    rows = read_rounds(tmp / "runs" / mode / "rounds.jsonl")
    per_round = [float(r["wall_s"]) for r in rows[1:]]
    out.update({
        "round_wall_s": per_round,
        "steady_round_s": round(sum(per_round[1:]) / max(1, len(per_round) - 1), 2) if len(per_round) > 1 else None,
        "model_builds_per_node": builds,
        "accuracy": rows[-1].get("eval_accuracy"),
        "eval_loss": rows[-1].get("eval_loss"),
        "final_eval": {k: v for k, v in rows[-1].items() if k.startswith("eval_") and isinstance(v, int | float)},
    })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run-config overrides (TOML values)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/deploy_speed.json"))
    args = parser.parse_args(argv)
    from flwr.common.config import parse_config_args

    args.overrides = parse_config_args([" ".join(args.set)]) if args.set else {}
    app = find_app_dir()
    results: dict[str, Any] = {"nodes": args.nodes, "rounds": args.rounds, "overrides": args.overrides, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="corolla-deploy-speed-") as tmp:
        for mode in args.modes:
            print(f"running {mode} ...", flush=True)
            results["runs"][mode] = run_mode(mode, app, Path(tmp), args)
            print(results["runs"][mode], flush=True)
    base = results["runs"].get("simulation", {}).get("steady_round_s")
    for run in results["runs"].values():
        if base and run.get("steady_round_s"):
            run["steady_vs_simulation"] = round(run["steady_round_s"] / base, 2)
    write_result(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
