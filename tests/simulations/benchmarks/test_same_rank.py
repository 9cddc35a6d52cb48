"""The same-rank benchmark's cells: every strategy without DP, the DP ones at the target ε, each a valid
config at the benchmark's rank, and FedSA's cells evaluating on clients (its personalised score)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pytest

from contract import parse_run_config
from simulations.benchmarks import same_rank
from simulations.benchmarks.dp_accuracy import overrides_for
from strategies.registry import check_strategy_config


def test_cells_are_every_strategy_plain_then_the_dp_strategies_at_the_target() -> None:
    args = argparse.Namespace(strategies=["fedit", "fedsa"], dp_strategies=["ffa"], epsilon=3.0)
    assert same_rank.cells_to_run(args) == [("fedit", math.inf), ("fedsa", math.inf), ("ffa", 3.0)]


def test_main_runs_each_cell_at_the_rank_with_fedsa_evaluated_on_clients(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[str, float, dict[str, Any]]] = []

    def fake_cell(app: Path, out: Path, strategy: str, epsilon: float, args: argparse.Namespace,
                  more: dict[str, Any] | None = None) -> dict[str, Any]:
        seen.append((strategy, epsilon, dict(more or {})))
        return {"accuracy": 0.5, "personal_accuracy": 0.7 if strategy == "fedsa" else None,
                "bytes_per_round_up": 1e6, "bytes_per_round_down": 2e6, "wall_s": 1.0}

    monkeypatch.setattr(same_rank, "run_cell", fake_cell)
    result = same_rank.main(["--strategies", "fedsa", "rolora", "--dp-strategies", "fedsvd", "--rank", "16",
                             "--out", str(tmp_path / "r.json")])
    assert [(s, e) for s, e, _ in seen] == [("fedsa", math.inf), ("rolora", math.inf), ("fedsvd", 3.0)]
    assert seen[0][2] == {"adapter.rank": 16, "fraction-evaluate": 1.0}
    assert seen[1][2] == seen[2][2] == {"adapter.rank": 16}
    assert result["rank"] == 16 and len(result["cells"]) == 3 and (tmp_path / "r.json").is_file()
    for strategy, epsilon, more in seen:  # every cell is a config the run would accept
        config = parse_run_config({**overrides_for(strategy, epsilon, rounds=3, max_grad_norm=1.0), **more})
        check_strategy_config(config)
        assert config.adapter.rank == 16 and config.privacy.enabled == math.isfinite(epsilon)
