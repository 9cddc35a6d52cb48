"""Benchmark the strategies at one rank for all: real ``flwr run`` simulations of the default task.

Issue 19's second table: every client at ``adapter.rank`` 32 (``--rank``), the default set-up
(``minilm-l6`` on ``topics``, 10 clients with Dirichlet label skew, 3 rounds), one simulation per
strategy and target ε (``inf`` = DP off), through the same path as ``corolla run``
(:func:`simulations.benchmarks.dp_accuracy.run_cell`). Reported per cell: the final global accuracy,
FedSA-LoRA's personalised accuracy (each client's shared ``A`` with its own ``B`` on its own shard,
``docs/algorithms.md §14``; its cells evaluate on every client, ``fraction-evaluate = 1``), the ε
spent and the MB one round moves up and down over all clients. Learning rates are the project
defaults except Fed-SB's 0.02 (``dp_accuracy.STRATEGY_SETTINGS``).

Usage: ``python -m simulations.benchmarks.same_rank [--strategies fedit fedsa rolora fedsvd ffa fedsb]
[--dp-strategies ffa fedsb fedsvd fedit] [--epsilon 3] [--rank 32] [--rounds 3] [--clients 10] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from simulations.benchmarks._output import write_result
from simulations.benchmarks.dp_accuracy import run_cell
from simulations.launch import find_app_dir

# FedSA-LoRA's personalised score is measured by federated evaluation on the clients' own shards
PERSONALISED = {"fedsa": {"fraction-evaluate": 1.0}}


def cells_to_run(args: argparse.Namespace) -> list[tuple[str, float]]:
    """``(strategy, target ε)`` pairs: every strategy without DP, then the DP strategies at ``--epsilon``."""
    plain = [(s, math.inf) for s in args.strategies]
    return plain + [(s, args.epsilon) for s in args.dp_strategies]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["fedit", "fedsa", "rolora", "fedsvd", "ffa", "fedsb"])
    parser.add_argument("--dp-strategies", nargs="*", default=["ffa", "fedsb", "fedsvd", "fedit"])
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/same_rank.json"))
    args = parser.parse_args(argv)
    app = find_app_dir()
    cells: list[dict[str, Any]] = []
    result = {"benchmark": "same_rank", "rank": args.rank, "rounds": args.rounds, "clients": args.clients,
              "epsilon": args.epsilon, "cells": cells}
    print(f"{'strategy':>9} {'ε':>5} {'accuracy':>9} {'personal':>9} {'MB up/rnd':>10} {'MB down/rnd':>12} {'secs':>7}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for strategy, epsilon in cells_to_run(args):
            more = {"adapter.rank": args.rank, **PERSONALISED.get(strategy, {})}
            cell = run_cell(app, Path(tmp), strategy, epsilon, args, more)
            cells.append(cell)
            personal = "-" if cell["personal_accuracy"] is None else f"{cell['personal_accuracy']:.3f}"
            print(f"{strategy:>9} {epsilon:>5g} {cell['accuracy']:>9.3f} {personal:>9} {cell['bytes_per_round_up'] / 1e6:>10.3f} "
                  f"{cell['bytes_per_round_down'] / 1e6:>12.3f} {cell['wall_s']:>7.1f}", flush=True)
            write_result(args.out, result)  # after every cell: a later cell's failure must not lose an hour
    return result


if __name__ == "__main__":
    main()
