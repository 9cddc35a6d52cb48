"""The mixed-rank benchmark's cells: valid configs for every default strategy, and its per-round loss columns."""

from __future__ import annotations

from contract import parse_run_config
from server.adapter_setup import adapter_kind_problems
from simulations.benchmarks.mixed_ranks import main, round_losses


def test_every_default_cell_is_a_valid_mixed_rank_config() -> None:
    for strategy in ("flora", "fedex", "hetlora", "flexlora"):
        config = parse_run_config({"strategy.name": strategy, "adapter.ranks": "4,8,16,32"})
        assert config.adapter.mixed_ranks() and adapter_kind_problems(config) == []


def test_round_losses_keep_the_deviation_and_the_truncation_losses_only() -> None:
    row = {"round": 2, "eval_accuracy": 0.9, "dev_rel_mean": 0.3, "dev_rel/q": 0.2, "trunc_rel/r4": 0.5, "trunc_rel/r32": 0.1}
    assert round_losses(row) == {"dev_rel_mean": 0.3, "trunc_rel/r4": 0.5, "trunc_rel/r32": 0.1}


def test_a_bad_override_fails_before_any_simulation(tmp_path) -> None:
    import pytest

    from contract import ConfigError

    with pytest.raises(ConfigError, match="fedsb"):
        main(["--strategies", "fedsb", "--out", str(tmp_path / "x.json")])
