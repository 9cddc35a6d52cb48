"""FedIT vs Fed-SB, DP off vs on, plain vs TokenSwap: the memorisation table of the ``memorization`` task.

Each run already measures extraction both ways every round (``fed_eval_mem_plain_*`` and
``fed_eval_mem_swap_*`` from the clients' own shards; ``eval_perplexity``/``eval_swap_perplexity``
centrally), so the 2 x 2 x 2 table needs four runs: {fedit, fedsb} x {DP off, DP on}. ``run_grid``
launches them through ``flwr run`` (``simulations.launch``, like ``corolla compare``); ``gather`` reads
any run folders; both write ``memorization.md`` and ``memorization.csv``::

    python -m simulations.memorization_table --out runs/mem --model <word-model folder> --clients 4
    python -m simulations.memorization_table --gather runs/mem/runs/* --out runs/mem
"""

from __future__ import annotations

import argparse
import csv
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides

GRID: tuple[tuple[str, bool], ...] = (("fedit", False), ("fedit", True), ("fedsb", False), ("fedsb", True))
COLUMNS = ("strategy", "dp", "epsilon", "decoding", "exact_match", "match_prefix", "rougeL", "levenshtein",
           "frac_em", "reduction_x", "perplexity")


def plan(overrides: Mapping[str, Any], *, out: Path, noise_multiplier: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
    """``(run name, overrides)`` for each cell of :data:`GRID`."""
    cells = []
    for strategy, dp in GRID:
        name = f"{strategy}-{'dp' if dp else 'nodp'}"
        values = {**overrides, "task.name": "memorization", "strategy.name": strategy, "adapter.name": "auto",
                  "privacy.enabled": dp, "privacy.noise-multiplier": noise_multiplier if dp else 0.0,
                  "privacy.target-epsilon": 0.0, "fraction-evaluate": 1.0, "data.partitioner": "iid",
                  "output-dir": str(out / "runs"), "run-name": name}
        cells.append((name, values))
    return cells


def gather(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Two table rows (plain, TokenSwap) per run folder, from its config and last round."""
    rows = []
    for folder in folders:
        config = json.loads((Path(folder) / "config.json").read_text())
        lines = (Path(folder) / "rounds.jsonl").read_text().splitlines()
        last = json.loads([line for line in lines if line.strip()][-1])
        for decoding, side in (("plain", "plain"), ("tokenswap", "swap")):
            row: dict[str, Any] = {"strategy": config["strategy.name"], "dp": bool(config["privacy.enabled"]),
                                   "epsilon": last.get("epsilon"), "decoding": decoding}
            for metric in ("exact_match", "match_prefix", "rougeL", "levenshtein", "frac_em"):
                row[metric] = last.get(f"fed_eval_mem_{side}_{metric}")
            row["reduction_x"] = last.get("fed_eval_mem_reduction_x") if side == "swap" else None
            row["perplexity"] = last.get("eval_perplexity" if side == "plain" else "eval_swap_perplexity")
            rows.append(row)
    return rows


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_table(rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """``memorization.md`` (Markdown table) and ``memorization.csv`` in ``out``; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "memorization.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in COLUMNS) + " |" for row in rows]
    path = out / "memorization.md"
    path.write_text("Extraction from the clients' own shards (last round), plain and with TokenSwap.\n\n"
                    + "\n".join(lines) + "\n")
    return path


def run_grid(overrides: Mapping[str, Any], *, out: Path, clients: int, noise_multiplier: float = 1.0) -> Path:
    """Launch the four runs (validated first) and write the table; returns the Markdown path."""
    app = find_app_dir()
    cells = plan(overrides, out=out.resolve(), noise_multiplier=noise_multiplier)
    flats = [(name, resolve_config(app, [toml_overrides(values)])[1]) for name, values in cells]
    for name, flat in flats:
        result = launch(app, flat, num_supernodes=clients, echo=False)
        if not result.ok:
            raise RuntimeError(f"run {name} ended {result.status}:\n{result.output[-2000:]}")
    return write_table(gather([out.resolve() / "runs" / name for name, _ in cells]), out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for runs/ and the table")
    parser.add_argument("--gather", type=Path, nargs="*", help="existing run folders: only build the table")
    parser.add_argument("--model", default="", help="model.name for the runs (a word-level or subword model)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further run-config overrides")
    args = parser.parse_args(argv)
    if args.gather:
        print(write_table(gather(args.gather), args.out).read_text())
        return
    overrides: dict[str, Any] = {"num-server-rounds": args.rounds}
    if args.model:
        overrides["model.name"] = args.model
    for item in args.set:
        key, _, value = item.partition("=")
        try:  # TOML literal (number, boolean, quoted string), else the raw text
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value
    print(run_grid(overrides, out=args.out, clients=args.clients, noise_multiplier=args.noise_multiplier).read_text())


if __name__ == "__main__":
    main()
