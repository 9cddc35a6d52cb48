"""Benchmark SecAgg+ against the plain run: accuracy, final adapter, bytes by phase, wall time, dropouts.

Real ``flwr run`` simulations (the path ``corolla run`` takes) of the default task and model with
``--clients`` SuperNodes, in pairs that differ only in ``secagg.enabled``:

* ``plain`` / ``secagg``: ``--rounds`` rounds; final accuracy and eval loss, the largest entry-wise
  difference of the final adapters, bytes per client per round by ledger phase, wall time of each
  run (the ratio is only meaningful because both ran in the same session, one after the other);
* ``plain-drop`` / ``secagg-drop``: the same with ``faults.fail-fraction`` making exactly one client
  fail in its train handler every round (with SecAgg: after it shared its keys, so its pairwise masks
  must be reconstructed in the unmask stage), ``--drop-rounds`` rounds. With one round the final
  adapter *is* the aggregate over the survivors, so ``max_adapter_diff`` must stay below the
  quantisation bound ``2c/(2^b-1)`` plus float32 rounding of the stored adapter.

The seed of the dropout pair (``--drop-seed``, with ``--drop-fraction``) is one where the fault
draw (``client.faults.draw_fault``) fails exactly one of the clients in each round; the script
checks it before running. Usage::

    python -m simulations.benchmarks.secagg_cost --strategy fedit [--clients 10] [--rounds 3]
        [--drop-rounds 1] [--cells plain secagg plain-drop secagg-drop] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from client.faults import draw_fault
from contract import parse_run_config
from server.run_folder import read_rounds
from simulations.benchmarks._output import write_result
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides

CELLS = ("plain", "secagg", "plain-drop", "secagg-drop")


def failing_partitions(seed: int, fraction: float, clients: int, rounds: int) -> list[list[int]]:
    """The partitions ``faults.fail-fraction = fraction`` fails in each round under ``seed``."""
    config = parse_run_config({"faults.fail-fraction": fraction, "seed": seed})
    return [[p for p in range(clients) if draw_fault(config, server_round=r, partition_id=p) == "fail"]
            for r in range(1, rounds + 1)]


def cell_overrides(cell: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run-config overrides of one cell."""
    values: dict[str, Any] = {"strategy.name": args.strategy, "num-server-rounds": args.rounds}
    if cell.endswith("-drop"):
        values.update({"num-server-rounds": args.drop_rounds, "seed": args.drop_seed,
                       "faults.fail-fraction": args.drop_fraction})
    if cell.startswith("secagg"):
        values["secagg.enabled"] = True
    return values


def phase_bytes(folder: Path, clients: int, rounds: int) -> dict[str, float]:
    """Ledger bytes per client per round, by ``phase/direction`` (one-time set-up spread over rounds)."""
    totals: dict[str, int] = defaultdict(int)
    with (folder / "ledger.csv").open() as handle:
        for row in csv.DictReader(handle):
            totals[f"{row['phase']}/{row['direction']}"] += int(row["bytes"])
    return {key: round(value / (clients * rounds), 1) for key, value in sorted(totals.items())}


def run_cell(app: Path, out: Path, cell: str, args: argparse.Namespace) -> dict[str, Any]:
    """One simulation; raises if it did not complete."""
    name = f"{args.strategy}-{cell}"
    extra = {**cell_overrides(cell, args), "output-dir": str(out), "run-name": name}
    _, flat = resolve_config(app, [toml_overrides(extra)])
    started = time.perf_counter()
    result = launch(app, flat, num_supernodes=args.clients, echo=False)
    wall = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"{name}: run {result.run_id} ended {result.status}\n{result.output[-2000:]}")
    folder = out / name
    rows = read_rounds(folder / "rounds.jsonl")
    summary = json.loads((folder / "summary.json").read_text())
    rounds = int(extra["num-server-rounds"])
    return {
        "cell": cell,
        "overrides": {k: v for k, v in extra.items() if k != "output-dir"},
        "accuracy_per_round": [r.get("eval_accuracy") for r in rows],
        "eval_loss_per_round": [r.get("eval_loss") for r in rows],
        "clients_per_round": [r.get("clients") for r in rows[1:]],
        "dropped_per_round": [r.get("dropped") for r in rows[1:]],
        "bytes_per_client_per_round": phase_bytes(folder, args.clients, rounds),
        "secagg": summary.get("secagg"),
        "wall_s": round(wall, 1),
        "adapter": str(folder / "adapter" / "adapter_model.safetensors"),
    }


def adapter_diff(a: str, b: str) -> float:
    """Largest entry-wise difference of two saved adapters (same keys)."""
    x, y = load_file(a), load_file(b)
    if x.keys() != y.keys():
        raise ValueError(f"the adapters hold different arrays: {sorted(x.keys() ^ y.keys())}")
    return max(float(np.max(np.abs(x[k].astype(np.float64) - y[k].astype(np.float64)))) for k in x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="fedit")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drop-rounds", type=int, default=1)
    parser.add_argument("--drop-seed", type=int, default=70)
    parser.add_argument("--drop-fraction", type=float, default=0.1)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/secagg_cost.json"))
    args = parser.parse_args(argv)
    if any(c.endswith("-drop") for c in args.cells):
        failing = failing_partitions(args.drop_seed, args.drop_fraction, args.clients, args.drop_rounds)
        if any(len(f) != 1 for f in failing):
            parser.error(f"--drop-seed {args.drop_seed} --drop-fraction {args.drop_fraction} fails {failing} "
                         "per round, not exactly one client: pick another seed")
    else:
        failing = []
    app = find_app_dir()
    results: dict[str, Any] = {"strategy": args.strategy, "clients": args.clients, "rounds": args.rounds,
                               "drop_rounds": args.drop_rounds, "failing_partitions": failing, "cells": {}}
    with tempfile.TemporaryDirectory(prefix="corolla-secagg-") as tmp:
        for cell in args.cells:
            print(f"running {cell} ...", flush=True)
            results["cells"][cell] = run_cell(app, Path(tmp), cell, args)
            print(json.dumps({k: v for k, v in results["cells"][cell].items() if k != "adapter"}), flush=True)
        cells = results["cells"]
        for plain, secure in (("plain", "secagg"), ("plain-drop", "secagg-drop")):
            if plain in cells and secure in cells:
                results[f"{secure}_vs_{plain}"] = {
                    "max_adapter_diff": adapter_diff(cells[plain]["adapter"], cells[secure]["adapter"]),
                    "wall_ratio": round(cells[secure]["wall_s"] / cells[plain]["wall_s"], 3),
                    "mean_error_bound": (cells[secure]["secagg"] or {}).get("mean_error_bound"),
                }
        for cell in cells.values():
            cell.pop("adapter")
    write_result(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
