"""Benchmark clients of different ranks: real ``flwr run`` simulations of the default task with ``adapter.ranks``.

For each strategy, one simulation of the default set-up (``minilm-l6`` on ``topics``, 10 clients with
Dirichlet label skew) with per-client ranks ``4,8,16,32`` round-robin by partition id
(``docs/algorithms.md §18``), through the same path as ``corolla run``. Reports per strategy the final
accuracy, the bytes one client of each rank class moved per round down and up (the ledger read per
``summary.json``'s ``client_ranks``), and per round the strategy's own loss measure: FedEx-LoRA's residual
share and HetLoRA's deviation (``dev_rel_mean``), FlexLoRA's truncation loss per rank (``trunc_rel/r<r>``);
FLoRA has none (exact, nothing folded away). Writes JSON.

Usage: ``python -m simulations.benchmarks.mixed_ranks [--strategies flora fedex hetlora flexlora]
[--ranks 4,8,16,32] [--rounds 3] [--clients 10] [--out PATH] [-c 'key=value ...']`` (run it under the
machine's heavy-job lock: every cell is a whole simulation).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from flwr.common.config import parse_config_args

from server.run_folder import read_rounds
from simulations.benchmarks._output import write_result
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides
from simulations.report.runs import load_run

LOSS_KEYS = ("dev_rel_mean", "trunc_rel/r")  # FedEx-LoRA / HetLoRA, FlexLoRA (per rank)


def round_losses(row: dict[str, Any]) -> dict[str, float]:
    """The strategy's own per-round loss measures in a ``rounds.jsonl`` row."""
    return {k: float(v) for k, v in row.items() if k == LOSS_KEYS[0] or k.startswith(LOSS_KEYS[1])}


def run_cell(app: Path, out: Path, strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    """One simulation; returns its numbers (raises if the run did not complete)."""
    extra: dict[str, Any] = {**args.overrides, "strategy.name": strategy, "adapter.ranks": args.ranks,
                             "num-server-rounds": args.rounds, "output-dir": str(out), "run-name": strategy}
    _, flat = resolve_config(app, [toml_overrides(extra)])
    started = time.perf_counter()
    result = launch(app, flat, num_supernodes=args.clients, echo=False)
    if not result.ok:
        raise RuntimeError(f"{strategy}: run {result.run_id} ended {result.status}\n{result.output[-2000:]}")
    rows = read_rounds(out / strategy / "rounds.jsonl")
    metric = f"eval_{load_run(out / strategy).main_metric}"
    return {
        "strategy": strategy,
        "final": rows[-1].get(metric),
        "per_round": [r.get(metric) for r in rows],
        "bytes_by_rank": {str(rank): v for rank, v in load_run(out / strategy).bytes_by_rank().items()},
        "losses_per_round": [round_losses(r) for r in rows[1:]],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["flora", "fedex", "hetlora", "flexlora"])
    parser.add_argument("--ranks", default="4,8,16,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("-c", "--run-config", default="", help="further overrides for every cell, 'key=value ...'")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/mixed_ranks.json"))
    args = parser.parse_args(argv)
    args.overrides = parse_config_args([args.run_config]) if args.run_config else {}
    app = find_app_dir()
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            cell = run_cell(app, Path(tmp), strategy, args)
            cells.append(cell)
            ranks = "  ".join(f"r{r}: {v['down'] / 1e6:.3f}/{v['up'] / 1e6:.3f}" for r, v in cell["bytes_by_rank"].items())
            print(f"{strategy:>9} final {cell['final']} | MB/round down/up per client {ranks} | "
                  f"losses {cell['losses_per_round']} | {cell['wall_s']:.0f} s", flush=True)
    result = {"benchmark": "mixed_ranks", "ranks": args.ranks, "rounds": args.rounds, "clients": args.clients,
              "overrides": args.overrides, "cells": cells}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
