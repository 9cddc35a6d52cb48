"""The ClientApp with ``privacy.enabled``: ε in Context.state across rounds, budget refusal, no leaks."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict

import client.worker as worker_module
from client.app import app as client_app
from client.privacy_history import history_path
from privacy import STATE_KEY
from contract import EPSILON_SPENT, PRIVACY_BUDGET_EXHAUSTED, PRIVACY_HISTORY_MISSING, ConfigError, parse_run_config
from tests.client.test_app import RUN, initial_arrays, reply_arrays, train_message

DP = {**RUN, "privacy.enabled": True, "privacy.noise-multiplier": 1.0, "num-server-rounds": 3}


def dp_context(run_config: dict, partition_id: int = 0, state: RecordDict | None = None) -> Context:
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        # a fresh state-dir each time: a history on disk from another test would be restored (client.privacy_history)
        node_config={"partition-id": partition_id, "num-partitions": 4, "state-dir": tempfile.mkdtemp()},
        state=state if state is not None else RecordDict(),
        run_config=dict(run_config),
    )


def test_epsilon_grows_round_by_round_from_the_history_in_context_state() -> None:
    arrays, ctx = initial_arrays(), dp_context(DP)
    eps = []
    for server_round in (1, 2, 3):
        reply = client_app(train_message(arrays, 100, server_round), ctx)
        reply_arrays(reply)
        eps.append(reply.content["metrics"]["epsilon"])
        assert STATE_KEY in ctx.state
    assert 0 < eps[0] < eps[1] < eps[2] < float("inf")
    # a fresh ClientApp process with the same state continues, not restarts, the accountant
    again = client_app(train_message(arrays, 100, 4), dp_context(DP, state=ctx.state))
    assert again.content["metrics"]["epsilon"] > eps[2]


def test_a_client_past_its_budget_refuses_to_train_and_keeps_its_history() -> None:
    config = {**DP, "privacy.noise-multiplier": 0.0, "privacy.target-epsilon": 5.0, "num-server-rounds": 1}
    arrays, ctx = initial_arrays(), dp_context(config)
    first = client_app(train_message(arrays, 100, 1), ctx)
    assert 0 < first.content["metrics"]["epsilon"] <= 5.0  # σ calibrated to the whole planned run
    saved = dict(ctx.state[STATE_KEY])
    refused = client_app(train_message(arrays, 100, 2), ctx)  # a round beyond the plan
    assert refused.has_error()
    assert refused.error.code == PRIVACY_BUDGET_EXHAUSTED
    assert "privacy budget exhausted" in refused.error.reason and "privacy.target-epsilon" in refused.error.reason
    assert dict(ctx.state[STATE_KEY]) == dict(saved)  # the refused round spent nothing


def test_dp_rounds_are_reproducible_noised_and_leave_no_opacus_state_on_the_shared_worker() -> None:
    arrays = initial_arrays()
    worker_module._CACHE.clear()
    plain_fresh = reply_arrays(client_app(train_message(arrays, 100), dp_context(RUN)))
    dp_one = reply_arrays(client_app(train_message(arrays, 101), dp_context(DP, partition_id=1)))
    dp_two = reply_arrays(client_app(train_message(arrays, 101), dp_context(DP, partition_id=1)))
    plain_after = reply_arrays(client_app(train_message(arrays, 100), dp_context(RUN)))
    plain_other = reply_arrays(client_app(train_message(arrays, 101), dp_context(RUN, partition_id=1)))

    for key in dp_one:  # same seed, same Poisson batches and noise
        np.testing.assert_array_equal(dp_one[key], dp_two[key])
    assert any(not np.array_equal(dp_one[k], plain_other[k]) for k in dp_one)  # DP changed the update
    for key in plain_fresh:  # the DP round left nothing behind on the cached model
        np.testing.assert_array_equal(plain_fresh[key], plain_after[key])
    model = worker_module._CACHE[next(iter(worker_module._CACHE))].model
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())
    assert not any(name.startswith("_module.") for name, _ in model.named_parameters())


def test_privacy_settings_are_checked_at_start_with_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="privacy.noise-multiplier.*privacy.target-epsilon"):
        parse_run_config({"privacy.enabled": True})
    with pytest.raises(ConfigError, match="privacy.target-epsilon.*set the other to 0"):
        parse_run_config({"privacy.enabled": True, "privacy.noise-multiplier": 1.0, "privacy.target-epsilon": 8.0})
    with pytest.raises(ConfigError, match="privacy.accountant"):
        parse_run_config({"privacy.accountant": "gdp"})
    assert parse_run_config({"privacy.enabled": True, "privacy.target-epsilon": 8.0}).privacy.enabled


def _spent(msg: Message, epsilon: float) -> Message:
    """``msg`` with the server's record of this node's ε (``EPSILON_SPENT``), as the ledger stamps it."""
    msg.content["config"][EPSILON_SPENT] = epsilon
    return msg


def test_after_a_restart_the_history_comes_back_from_the_nodes_disk_and_epsilon_goes_on() -> None:
    arrays = initial_arrays()
    plain = dp_context(DP)
    eps_plain = [client_app(train_message(arrays, 100, r), plain).content["metrics"]["epsilon"] for r in (1, 2)]
    node = dp_context(DP)
    first = client_app(_spent(train_message(arrays, 100, 1), 0.0), node)
    path = history_path(node, 0)
    assert json.loads(path.read_text())["format"] == "corolla.privacy-history/1"  # JSON, never pickle
    restarted = Context(run_id=1, node_id=100, node_config=dict(node.node_config), state=RecordDict(),
                        run_config=dict(DP))  # a SuperNode restart: Context.state is empty
    second = client_app(_spent(train_message(arrays, 100, 2), first.content["metrics"]["epsilon"]), restarted)
    assert [first.content["metrics"]["epsilon"], second.content["metrics"]["epsilon"]] == eps_plain


def test_a_node_without_the_history_the_server_expects_refuses_to_train() -> None:
    arrays = initial_arrays()
    lost = dp_context(DP)  # empty state, empty state-dir
    refused = client_app(_spent(train_message(arrays, 100, 2), 0.5), lost)
    assert refused.has_error() and refused.error.code == PRIVACY_HISTORY_MISSING
    assert "ε = 0.5" in refused.error.reason and str(history_path(lost, 0)) in refused.error.reason
    assert STATE_KEY not in lost.state
    # an older history than what the server saw (a stale backup) is refused too
    node = dp_context(DP)
    eps = client_app(_spent(train_message(arrays, 100, 1), 0.0), node).content["metrics"]["epsilon"]
    stale = client_app(_spent(train_message(arrays, 100, 2), eps * 1.5), node)
    assert stale.has_error() and stale.error.code == PRIVACY_HISTORY_MISSING


def test_a_damaged_history_file_is_named_in_the_error() -> None:
    arrays = initial_arrays()
    node = dp_context(DP)
    path = history_path(node, 0)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "corolla.privacy-history/1", "mechanism": "rdp", "steps": [1]}')
    with pytest.raises(ValueError, match="cannot be read") as caught:  # Flower turns it into an error reply
        client_app(_spent(train_message(arrays, 100, 1), 0.0), node)
    assert str(path) in str(caught.value)
