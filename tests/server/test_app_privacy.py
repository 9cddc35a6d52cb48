"""A DP run through the ServerApp: ε per round (max over clients, never averaged), refusals dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.app import app as client_app
from privacy import save_history
from server.app import run
from adapters.lora_sb import FEDERATED_INIT_GAP
from adapters.lora_sb.kind import SERVER_INIT_GAP
from client.tasks.arithmetic import ArithmeticWordProblems
from server.privacy_statement import REPLY_METRICS_GAP, privacy_statement
from server.run_folder import read_rounds
from contract import parse_run_config
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

DP_RUN = {
    **TINY_RUN,
    "num-server-rounds": 2,
    "train.local-steps": 2,
    "train.batch-size": 8,
    "eval.max-examples": 16,
    "privacy.enabled": True,
    "privacy.noise-multiplier": 0.8,
}


def _client_epsilons(grid: FakeGrid, server_round: int) -> list[float]:
    return [
        reply.content["metrics"]["epsilon"]
        for instruction, reply in grid.log
        if instruction.metadata.message_type == "train"
        and instruction.content["config"]["server-round"] == server_round
        and reply.has_content()
        and "epsilon" in reply.content["metrics"]
    ]


@pytest.mark.parametrize("strategy", ["fedit", "ffa", "fedsb", "fedex"])
def test_epsilon_is_the_max_over_clients_and_grows_every_round(strategy: str, tmp_path: Path) -> None:
    values = {**DP_RUN, "strategy.name": strategy, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    rows = read_rounds(run(grid, parse_run_config(values)).path / "rounds.jsonl")
    for r in (1, 2):
        clients = _client_epsilons(grid, r)
        assert len(clients) == 3
        assert rows[r]["epsilon"] == max(clients)  # max, not the mean
    assert 0 < rows[1]["epsilon"] < rows[2]["epsilon"] < float("inf")


def test_a_client_out_of_budget_is_logged_dropped_and_the_run_goes_on(tmp_path: Path) -> None:
    values = {
        **DP_RUN,
        "privacy.noise-multiplier": 0.0,
        "privacy.target-epsilon": 4.0,
        "num-server-rounds": 1,
        "output-dir": str(tmp_path),
    }
    grid = FakeGrid(client_app, 3, run_config=values)
    # node 0 already spent its budget (a long earlier history in its Context.state)
    save_history(grid.contexts[100].state, [(0.5, 0.5, 10_000)], mechanism="rdp")
    rows = read_rounds(run(grid, parse_run_config(values)).path / "rounds.jsonl")
    assert (rows[1]["clients"], rows[1]["dropped"]) == (2, 1)
    assert rows[1]["epsilon"] <= 4.0
    refused = [reply for _, reply in grid.log if reply.has_error()]
    assert len(refused) == 1 and "privacy budget exhausted" in refused[0].error.reason


def test_a_fedsb_run_with_federated_init_states_what_epsilon_does_not_cover(tmp_path: Path) -> None:
    values = {**DP_RUN, "strategy.name": "fedsb", "adapter.init": "federated", "num-server-rounds": 1,
              "output-dir": str(tmp_path)}
    folder = run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values))
    summary = json.loads((folder.path / "summary.json").read_text())["privacy"]
    assert summary["not_covered"] == [REPLY_METRICS_GAP, FEDERATED_INIT_GAP]
    assert summary["epsilon"] > 0
    server_init = privacy_statement(parse_run_config({**DP_RUN, "strategy.name": "fedsb"}), "lora-sb", ArithmeticWordProblems)
    assert server_init is not None and server_init["not_covered"] == [REPLY_METRICS_GAP, SERVER_INIT_GAP]
    assert privacy_statement(parse_run_config(TINY_RUN), "lora", ArithmeticWordProblems) is None


def test_a_delta_the_largest_shard_would_refuse_fails_before_any_message(tmp_path: Path) -> None:
    from server.split_check import SplitError

    values = {**DP_RUN, "privacy.delta": 0.009, "output-dir": str(tmp_path)}  # valid config, but 1/n < δ for n > 111
    grid = FakeGrid(client_app, 2, run_config=values)
    with pytest.raises(SplitError, match=r"`privacy.delta` = 0.009 is not below 1/n = .* for the largest client shard"):
        run(grid, parse_run_config(values))
    assert grid.log == [] and not any(tmp_path.iterdir())  # no client asked, no run folder
