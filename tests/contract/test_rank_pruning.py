"""HetLoRA's pruning rule (arXiv 2401.06432 §3.2; docs/algorithms.md §19): step sizes, the floor, the wire form."""

from __future__ import annotations

import pytest

from contract.rank_pruning import PRUNE_GAMMA, PRUNE_LAMBDA, PRUNE_MIN_RANK, PruneRule, kept_rank, prune_step


@pytest.mark.parametrize(("rank", "gamma", "step"), [(8, 0.25, 2), (10, 0.3, 3), (8, 0.3, 3), (1, 0.5, 1), (32, 0.01, 1), (4, 0.0, 0)])
def test_one_step_cuts_the_last_ceil_gamma_r_components(rank: int, gamma: float, step: int) -> None:
    assert prune_step(rank, gamma) == step  # 0.3·10 is 3.0000000000000004 in floats: still 3


def test_the_floor_is_never_crossed_and_a_rank_never_grows() -> None:
    assert kept_rank(8, 0.5, 1) == 4
    assert kept_rank(8, 0.5, 6) == 6  # the floor stops the step part-way
    assert kept_rank(4, 0.5, 8) == 4  # a client already below the floor keeps its rank
    assert kept_rank(1, 0.5, 1) == 1
    with pytest.raises(ValueError, match="floor"):
        kept_rank(8, 0.5, 0)
    with pytest.raises(ValueError, match="gamma"):
        prune_step(8, 1.0)


def test_the_rule_round_trips_through_an_instruction_and_refuses_what_no_client_can_apply() -> None:
    rule = PruneRule(gamma=0.25, lam=0.5, min_rank=2)
    assert PruneRule.from_config(rule.to_config()) == rule
    assert PruneRule.from_config({"server-round": 3}) is None  # no rule: no pruning
    assert PruneRule.from_config({PRUNE_GAMMA: 0.5, PRUNE_LAMBDA: 0, PRUNE_MIN_RANK: 1}) == PruneRule(0.5, 0.0, 1)
    with pytest.raises(ValueError, match="not all of"):
        PruneRule.from_config({PRUNE_GAMMA: 0.5})
    for bad in ({PRUNE_GAMMA: 0.0}, {PRUNE_GAMMA: 1.0}, {PRUNE_LAMBDA: -1.0}, {PRUNE_LAMBDA: float("nan")},
                {PRUNE_MIN_RANK: 0}, {PRUNE_MIN_RANK: True}, {PRUNE_GAMMA: "0.5"}):
        with pytest.raises(ValueError, match="rank-prune"):
            PruneRule.from_config({**rule.to_config(), **bad})
