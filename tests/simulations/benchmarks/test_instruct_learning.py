"""The instruction-tuning benchmark: each strategy's run is a valid ``instruct`` config, and one failed run
keeps the other strategies' results (written after every strategy)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from simulations.benchmarks import instruct_learning
from simulations.launch import find_app_dir, resolve_config, toml_overrides


def test_every_strategy_gets_a_valid_instruct_config_split_by_skill() -> None:
    args = argparse.Namespace(
        model="smollm2-135m", rounds=5, seed=0, steps=3, batch=8, lr=1e-3, rank=8, alpha=0.2, max_length=192,
        examples=160, test_fraction=0.125, max_new_tokens=32, eval_batch=32, fraction_train=0.5,
    )
    for strategy in ("fedit", "fedsb", "fedex", "ffa"):
        config, _ = resolve_config(find_app_dir(), [toml_overrides(instruct_learning.overrides_for(strategy, args))])
        assert config.task.name == "instruct" and config.data.partitioner == "dirichlet"
        assert config.fraction_train == 0.5 and config.adapter.rank == (32 if strategy == "fedsb" else 8)


def test_a_failed_run_keeps_the_other_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_run(app: Path, out: Path, strategy: str, args: argparse.Namespace) -> dict[str, Any]:
        if strategy == "fedsb":
            raise RuntimeError("fedsb: run 1 ended finished:failed")
        return {"strategy": strategy, "score_per_round": [0.0, 0.5], "bytes_total": 10,
                "score_per_skill_per_round": {s: [0.0, 0.5] for s in instruct_learning.SKILLS}, "wall_s": 1.0}

    monkeypatch.setattr(instruct_learning, "run_strategy", fake_run)
    out = tmp_path / "r.json"
    result = instruct_learning.main(["--strategies", "fedit", "fedsb", "ffa", "--out", str(out)])
    assert [r["strategy"] for r in result["runs"]] == ["fedit", "fedsb", "ffa"]
    assert "finished:failed" in result["runs"][1]["error"] and result["runs"][2]["score_per_round"] == [0.0, 0.5]
    assert json.loads(out.read_text())["runs"] == result["runs"]
