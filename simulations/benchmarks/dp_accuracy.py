"""Benchmark accuracy against ε: real ``flwr run`` simulations of the default task with DP-SGD.

For each strategy and each target ε (``inf`` = DP off), one simulation of the default set-up
(``minilm-l6`` on ``topics``, 10 clients with Dirichlet label skew, 3 rounds) through the same path
as ``corolla run``; σ is calibrated by Opacus to the target over all rounds (``privacy.target-epsilon``)
with δ = min(1e-5, 1/(10 n)) per client. Reports the final accuracy, the ε actually spent (max over
clients) and the bytes per round, and writes JSON.

Per-strategy settings: ``fedsb`` uses r = 32 and lr = 0.02 (its best measured non-DP setting here;
Fed-SB trains only r² numbers per module, so it takes a higher rank and step size), the others the
defaults. Usage: ``python -m simulations.benchmarks.dp_accuracy [--strategies fedit fedsb]
[--epsilons 1 3 8 inf] [--rounds 3] [--clients 10] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from server.run_folder import read_rounds
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides
from simulations.benchmarks._output import write_result

STRATEGY_SETTINGS: dict[str, dict[str, Any]] = {"fedsb": {"adapter.rank": 32, "train.lr": 0.02}}


def overrides_for(strategy: str, epsilon: float, *, rounds: int, max_grad_norm: float) -> dict[str, Any]:
    """The run-config overrides of one cell (ε = inf: DP off)."""
    values: dict[str, Any] = {"strategy.name": strategy, "num-server-rounds": rounds, **STRATEGY_SETTINGS.get(strategy, {})}
    if math.isfinite(epsilon):
        values.update({"privacy.enabled": True, "privacy.target-epsilon": float(epsilon),
                       "privacy.max-grad-norm": max_grad_norm})
    return values


def run_cell(app: Path, out: Path, strategy: str, epsilon: float, args: argparse.Namespace,
             more: dict[str, Any] | None = None) -> dict[str, Any]:
    """One simulation; returns its final metrics (raises if the run did not complete). ``more``: further
    overrides of this cell (applied last)."""
    name = f"{strategy}-eps{epsilon:g}"
    extra = overrides_for(strategy, epsilon, rounds=args.rounds, max_grad_norm=args.max_grad_norm)
    extra.update({**(more or {}), "output-dir": str(out), "run-name": name})
    _, flat = resolve_config(app, [toml_overrides(extra)])
    started = time.perf_counter()
    result = launch(app, flat, num_supernodes=args.clients, echo=False)
    if not result.ok:
        raise RuntimeError(f"{name}: run {result.run_id} ended {result.status}\n{result.output[-2000:]}")
    rows = read_rounds(out / name / "rounds.jsonl")
    last = rows[-1]
    return {
        "strategy": strategy,
        "target_epsilon": epsilon if math.isfinite(epsilon) else None,
        "epsilon": last.get("epsilon"),
        "accuracy": last["eval_accuracy"],
        "eval_loss": last["eval_loss"],
        "accuracy_per_round": [r["eval_accuracy"] for r in rows],
        "personal_accuracy": last.get("fed_eval_personal_accuracy"),
        "bytes_per_round_up": rows[-1]["bytes_up"],
        "bytes_per_round_down": rows[-1]["bytes_down"],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["fedit", "fedsb"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0, math.inf])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/dp_accuracy.json"))
    args = parser.parse_args(argv)
    app = find_app_dir()
    cells = []
    print(f"{'strategy':>9} {'target ε':>9} {'spent ε':>9} {'accuracy':>9} {'MB up/rnd':>10} {'secs':>7}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            for epsilon in args.epsilons:
                cell = run_cell(app, Path(tmp), strategy, epsilon, args)
                cells.append(cell)
                spent = "-" if cell["epsilon"] is None else f"{cell['epsilon']:.3f}"
                print(f"{strategy:>9} {epsilon:>9g} {spent:>9} {cell['accuracy']:>9.3f} "
                      f"{cell['bytes_per_round_up'] / 1e6:>10.3f} {cell['wall_s']:>7.1f}", flush=True)
    result = {"benchmark": "dp_accuracy", "rounds": args.rounds, "clients": args.clients,
              "max_grad_norm": args.max_grad_norm, "cells": cells}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
