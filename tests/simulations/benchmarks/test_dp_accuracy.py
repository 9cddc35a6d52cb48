"""The accuracy-vs-ε benchmark's cells: DP on at a finite target, off at ε = inf, valid configs."""

from __future__ import annotations

import math

from contract import parse_run_config
from simulations.benchmarks.dp_accuracy import overrides_for
from strategies.registry import check_strategy_config


def test_each_cell_is_a_valid_config_with_dp_only_at_finite_epsilon() -> None:
    private = parse_run_config(overrides_for("fedsb", 3.0, rounds=3, max_grad_norm=1.0))
    assert private.privacy.enabled and private.privacy.target_epsilon == 3.0
    assert check_strategy_config(private) == "lora-sb" and private.adapter.rank == 32
    plain = parse_run_config(overrides_for("fedit", math.inf, rounds=2, max_grad_norm=1.0))
    assert not plain.privacy.enabled and plain.num_server_rounds == 2
