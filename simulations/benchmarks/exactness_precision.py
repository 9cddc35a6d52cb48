"""The exact strategies' measured ``exact_rel_error`` per base precision (the README's table).

Short federations of tiny-llama on ``arithmetic`` (2 clients, 2 rounds, 2 local steps, rank 4) through
the real ServerApp and ClientApp in one process, for every exact strategy and base set-up:

- ``float32``: float32 base, ``model.base-delta = auto`` (``fold``: the residual written into the weights);
- ``float32+delta``: float32 base, the delta kept in float32 beside it;
- ``bfloat16+delta``: bf16 base, float32 delta (``auto``'s choice for bf16);
- ``bfloat16+fold``: bf16 base with the delta written into the bf16 weights (the naive design);
- ``nf4+delta``: 4-bit NormalFloat base (bitsandbytes; skipped with the reason where it cannot run).

Each cell is the max over the two rounds of the server's audit (``docs/precision.md §4``).

Run (heavy; one at a time)::

    flock /tmp/corolla-heavy.lock nice python -m simulations.benchmarks.exactness_precision --out runs/exactness_precision.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

SETUPS = {
    "float32": {"model.dtype": "float32", "model.base-delta": "auto"},
    "float32+delta": {"model.dtype": "float32", "model.base-delta": "float32"},
    "bfloat16+delta": {"model.dtype": "bfloat16", "model.base-delta": "float32"},
    "bfloat16+fold": {"model.dtype": "bfloat16", "model.base-delta": "fold"},
    "nf4+delta": {"model.dtype": "bfloat16", "model.quantization": "nf4", "model.base-delta": "float32"},
}
STRATEGIES = ("fedex", "flora", "ffa", "fedsb")
RUN = {
    "model.name": "tiny-llama", "task.name": "arithmetic", "adapter.rank": 4, "adapter.alpha": 8.0,
    "train.local-steps": 2, "train.lr": 0.02, "train.batch-size": 4, "eval.central": False, "num-server-rounds": 2,
    "data.partitioner": "iid", "task.max-length": 32, "task.examples-per-client": 8, "adapter.init-examples": 8,
}


def measure(strategy: str, setup: str, out: Path) -> float | str:
    """Max ``exact_rel_error`` over the rounds, or why the set-up could not run."""
    from client.app import app as client_app
    from contract import parse_run_config
    from server.app import run
    from tests.strategies.fake_grid import FakeGrid

    values: dict[str, Any] = {**RUN, **SETUPS[setup], "strategy.name": strategy, "output-dir": str(out)}
    try:
        folder = run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values)).path
    except Exception as exc:  # noqa: BLE001 - e.g. no bitsandbytes: a cell, not a crash
        return f"n/a ({str(exc)[:60]})"
    rows = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    return max(float(r["exact_rel_error"]) for r in rows if r["round"] > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.exactness_precision")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--out", default="runs/exactness_precision.json")
    args = parser.parse_args(argv)
    strategies, setups = args.strategies.split(","), args.setups.split(",")
    table: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corolla-exact-") as scratch:
        for strategy in strategies:
            table[strategy] = {setup: measure(strategy, setup, Path(scratch)) for setup in setups}
    print("strategy | " + " | ".join(setups))
    for strategy, cells in table.items():
        print(f"{strategy} | " + " | ".join(f"{v:.2g}" if isinstance(v, float) else str(v) for v in cells.values()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": RUN, "setups": SETUPS, "exact_rel_error": table,
                               "wall_s": round(time.perf_counter() - started, 1)}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
