"""Run folders as report data: one :class:`RunData` per run, and the per-strategy headline numbers.

Everything comes from what a run leaves behind (``config.json``, ``rounds.jsonl``, ``summary.json``;
``server/run_folder.py``), so a report can be rendered again later without training. Bytes are the
metered ones: per round ``bytes_down`` includes one-time set-up traffic (``bytes_setup``, e.g.
Fed-SB's B and A), and round 0's row holds what was sent before round 1 (Fed-SB's federated
gradient round), so cumulative bytes count every byte the run moved.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.run_folder import read_rounds

DEV_PREFIX = "dev_rel/"


class RunFolderError(ValueError):
    """A folder that is not a complete Corolla run (the message names the missing file)."""


@dataclass(frozen=True)
class RunData:
    """One run: its config, its rounds (round 0 first) and its summary."""

    path: Path
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy.name", "?"))

    @property
    def label(self) -> str:
        """The strategy, marked ``+DP`` when the run used DP-SGD."""
        return self.strategy + ("+DP" if self.config.get("privacy.enabled") else "")

    @property
    def main_metric(self) -> str:
        return str(self.summary.get("main_metric", "accuracy"))

    def metric(self) -> list[float | None]:
        """``eval_<main metric>`` per round (None where central evaluation was off)."""
        return [row.get(f"eval_{self.main_metric}") for row in self.rounds]

    def cumulative_bytes(self) -> list[int]:
        """Bytes moved (both directions, set-up included) up to and including each round."""
        total, out = 0, []
        for row in self.rounds:
            total += int(row.get("bytes_down", 0)) + int(row.get("bytes_up", 0))
            out.append(total)
        return out

    def setup_bytes(self) -> int:
        """One-time set-up bytes (Fed-SB's B and A, federated gradient uploads)."""
        return sum(int(row.get("bytes_setup", 0)) for row in self.rounds) + int(self.rounds[0].get("bytes_up", 0))

    @property
    def ranks(self) -> str:
        """The clients' LoRA ranks: ``adapter.ranks`` (per client, round-robin) or the one ``adapter.rank``."""
        return str(self.config.get("adapter.ranks") or self.config.get("adapter.rank", "?"))

    def personal_metric(self) -> list[float | None]:
        """``fed_eval_personal_<main metric>`` per round: the personalised score (FedSA-LoRA), else None."""
        return [row.get(f"fed_eval_personal_{self.main_metric}") for row in self.rounds]

    def bytes_by_rank(self) -> dict[int, dict[str, float]]:
        """Per rank class (``summary.json``'s ``client_ranks`` over ``ledger.csv``): clients, and the mean bytes
        one client of the class moved per round it trained, down and up (set-up excluded). Empty without both."""
        ranks = {int(node): int(rank) for node, rank in self.summary.get("client_ranks", {}).items()}
        ledger = self.path / "ledger.csv"
        if not ranks or not ledger.is_file():
            return {}
        with ledger.open() as handle:
            rows = list(csv.DictReader(handle))
        out: dict[int, dict[str, float]] = {}
        for rank in sorted(set(ranks.values())):
            nodes = {node for node, r in ranks.items() if r == rank}
            train = [r for r in rows if int(r["node"]) in nodes and r["phase"] == "train"]
            sent = len([r for r in train if r["direction"] == "down"]) or 1
            out[rank] = {
                "clients": len(nodes),
                "down": sum(int(r["bytes"]) for r in train if r["direction"] == "down") / sent,
                "up": sum(int(r["bytes"]) for r in train if r["direction"] == "up") / sent,
            }
        return out

    def deviation(self) -> dict[str, list[float]]:
        """FedIT's relative deviation from exact aggregation: ``{module: [per round 1..T]}``."""
        modules = sorted({k[len(DEV_PREFIX):] for row in self.rounds for k in row if k.startswith(DEV_PREFIX)})
        return {m: [float(row.get(DEV_PREFIX + m, math.nan)) for row in self.rounds[1:]] for m in modules}


def load_run(path: Path) -> RunData:
    """Read one run folder.

    Raises
    ------
    RunFolderError
        If ``config.json``, ``rounds.jsonl`` or ``summary.json`` is missing or has no rounds.
    """
    path = Path(path)
    missing = [name for name in ("config.json", "rounds.jsonl", "summary.json") if not (path / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{path} is not a complete Corolla run folder: {', '.join(missing)} missing "
            "(a run that did not finish has no summary.json; pass folders written by `corolla run`)"
        )
    rounds = read_rounds(path / "rounds.jsonl")
    if not rounds:
        raise RunFolderError(f"{path}/rounds.jsonl has no rows")
    return RunData(
        path=path,
        config=json.loads((path / "config.json").read_text()),
        rounds=rounds,
        summary=json.loads((path / "summary.json").read_text()),
    )


def bytes_to_reach(run: RunData, target: float) -> int | None:
    """Cumulative bytes when the main metric first reaches ``target`` (None if it never does)."""
    for value, spent in zip(run.metric(), run.cumulative_bytes(), strict=True):
        if value is not None and value >= target:
            return spent
    return None


def default_target(runs: list[RunData]) -> float:
    """95% of the best final metric over the runs: a bar every good strategy can reach."""
    finals = [v for run in runs for v in run.metric()[-1:] if v is not None]
    return 0.95 * max(finals) if finals else math.nan


def rank_class_rows(runs: list[RunData]) -> list[dict[str, Any]]:
    """One row per run and rank class of a mixed-rank run: clients, MB per client per round down and up."""
    return [
        {"strategy": run.label, "rank": rank, **values}
        for run in runs
        for rank, values in run.bytes_by_rank().items()
    ]


def headline(runs: list[RunData], target: float | None = None) -> tuple[list[dict[str, Any]], float]:
    """One row per run: final and best metric, bytes up/down and set-up, bytes to target, ratios to FedIT.

    Returns the rows and the target used.
    """
    target = default_target(runs) if target is None else target
    rows: list[dict[str, Any]] = []  # table rows: numbers, labels and None for "not reached"
    for run in runs:
        values = [v for v in run.metric() if v is not None]
        personal = [v for v in run.personal_metric() if v is not None]
        up = sum(int(r.get("bytes_up", 0)) for r in run.rounds)
        down = sum(int(r.get("bytes_down", 0)) for r in run.rounds)
        trained = run.rounds[1:]
        per_round = max(len(trained), 1)
        rows.append({
            "strategy": run.label,
            "ranks": run.ranks,
            "rounds": len(trained),
            "personal_final": personal[-1] if personal else None,
            "final": values[-1] if values else None,
            "best": max(values) if values else None,
            "bytes_up": up,
            "bytes_down": down,
            "bytes_total": up + down,
            "bytes_setup": run.setup_bytes(),
            "bytes_per_round_up": sum(int(r.get("bytes_up", 0)) for r in trained) / per_round,
            "bytes_per_round_down": sum(int(r.get("bytes_down", 0)) - int(r.get("bytes_setup", 0)) for r in trained) / per_round,
            "bytes_to_target": bytes_to_reach(run, target),
            "epsilon": next((r["epsilon"] for r in reversed(run.rounds) if "epsilon" in r), None),
            "wall_s": run.summary.get("wall_s"),
        })
    base = next((r for r in rows if r["strategy"] == "fedit"), None)
    for row in rows:
        row["total_vs_fedit"] = row["bytes_total"] / base["bytes_total"] if base and base["bytes_total"] else None
        reach, base_reach = row["bytes_to_target"], base["bytes_to_target"] if base else None
        row["to_target_vs_fedit"] = reach / base_reach if reach is not None and base_reach else None
    return rows, target
