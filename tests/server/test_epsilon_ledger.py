"""The server's per-node ε ledger: reported, refused, dropped and timed-out nodes (docs/privacy.md §10)."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from contract import (
    CONFIG,
    EPSILON,
    EPSILON_SPENT,
    METRICS,
    NODE_STATE_MISSING,
    PARTITION_ID,
    PRIVACY_BUDGET_EXHAUSTED,
    PRIVACY_HISTORY_MISSING,
    message_bytes,
    reduce_metrics,
)
from server.epsilon_ledger import EpsilonLedger, NodeEpsilon
from strategies.validation import MalformedReply, check_epsilon
from tests.strategies.fake_grid import set_task_identity


def bound(partition: int | None, rounds: int) -> float:
    """A stand-in accountant: partition p spends (p + 1) per round; unknown: the worst partition (3)."""
    return (3 if partition is None else partition + 1) * rounds


def _instruction(node: int) -> Message:
    set_task_identity()
    msg = Message(RecordDict({CONFIG: ConfigRecord({"server-round": 1, EPSILON_SPENT: 0.0})}), dst_node_id=node,
                  message_type="train")
    msg.metadata.__dict__["_message_id"] = f"m{node}"
    return msg


def _reply(node: int, epsilon: float | None = None, partition: int = 0) -> Message:
    metrics = MetricRecord({"num-examples": 5, PARTITION_ID: partition})
    if epsilon is not None:
        metrics[EPSILON] = epsilon
    return Message(RecordDict({METRICS: metrics}), reply_to=_instruction(node))


def _error(node: int, code: int) -> Message:
    return Message(error=Error(code, "refused"), reply_to=_instruction(node))


def _round(ledger: EpsilonLedger, nodes: list[int], replies: list[Message], dropped: frozenset[int] = frozenset()) -> None:
    ledger.instructed(nodes)
    ledger.settle(replies, dropped=set(dropped))


def test_reported_epsilon_is_the_max_over_nodes_and_stays_after_a_node_is_not_sampled() -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1, 2], [_reply(1, 0.5, 0), _reply(2, 2.5, 2)])
    assert ledger.epsilon() == 2.5
    _round(ledger, [1], [_reply(1, 0.9, 0)])  # node 2 not sampled: its ε still counts
    assert ledger.epsilon() == 2.5 and ledger.bounded_nodes() == 0


def test_a_timed_out_node_is_charged_the_bound_of_every_round_it_may_have_trained() -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1, 2], [_reply(1, 0.5, 0), _reply(2, 1.0, 1)])
    _round(ledger, [1, 2], [_reply(1, 0.7, 0)])  # node 2 (partition 1: 2 per round) timed out
    assert ledger.nodes[2] == NodeEpsilon(reported=1.0, rounds=2, unreported=1, partition=1)
    assert ledger.epsilon() == 4.0 and ledger.bounded_nodes() == 1
    _round(ledger, [2], [_reply(2, 3.0, 1)])  # it reports again: its own history covers the lost round
    assert ledger.epsilon() == 3.0 and ledger.bounded_nodes() == 0


def test_a_node_never_heard_from_is_charged_the_worst_partition() -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1], [])
    assert ledger.epsilon() == 3.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, None])
def test_a_dropped_reply_or_an_unusable_epsilon_leaves_the_node_charged(bad: float | None) -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1, 2], [_reply(1, 0.1, 0), _reply(2, bad, 0)])
    assert ledger.epsilon() == 3.0  # node 2's partition is unknown: the worst one
    ledger2 = EpsilonLedger(bound, num_partitions=3)
    _round(ledger2, [1], [_reply(1, 0.1, 0)], dropped=frozenset({1}))  # the strategy refused the reply
    assert ledger2.epsilon() == 3.0


@pytest.mark.parametrize("code", [PRIVACY_BUDGET_EXHAUSTED, PRIVACY_HISTORY_MISSING, NODE_STATE_MISSING])
def test_refusals_before_training_spend_nothing(code: int) -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1], [_reply(1, 0.4, 2)])
    _round(ledger, [1], [_error(1, code)])
    assert ledger.nodes[1] == NodeEpsilon(reported=0.4, rounds=1, unreported=0, partition=2)
    assert ledger.epsilon() == 0.4


def test_an_error_after_training_is_charged() -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1], [_reply(1, 0.4, 2)])
    _round(ledger, [1], [_error(1, 2)])  # ClientApp exception: it may have trained
    assert ledger.epsilon() == 6.0


def test_stamp_gives_each_node_its_own_reported_epsilon_without_changing_sizes() -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1], [_reply(1, 0.25, 0)])
    shared = RecordDict({CONFIG: ConfigRecord({"server-round": 2, EPSILON_SPENT: 0.0})})
    set_task_identity()
    messages = [Message(shared, dst_node_id=n, message_type="train") for n in (1, 2)]
    before = [message_bytes(m) for m in messages]
    stamped = ledger.stamp(messages)
    assert [m.content[CONFIG][EPSILON_SPENT] for m in stamped] == [0.25, 0.0]
    assert [message_bytes(m) for m in stamped] == before
    assert shared[CONFIG][EPSILON_SPENT] == 0.0  # the strategy's shared record is untouched


def test_state_round_trips_and_damage_is_named() -> None:
    ledger = EpsilonLedger(bound, num_partitions=3)
    _round(ledger, [1, 2**63 + 5], [_reply(1, 0.5, 1)])
    nodes = EpsilonLedger.nodes_from_state(ledger.state())
    assert nodes == ledger.nodes
    with pytest.raises(ValueError, match="node '7'"):
        EpsilonLedger.nodes_from_state({"7": {"reported": -1.0, "rounds": 1, "unreported": 0, "partition": None}})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5, [1.0], True])
def test_validation_drops_a_reply_whose_epsilon_is_not_a_finite_nonnegative_number(bad: object) -> None:
    with pytest.raises(MalformedReply, match="epsilon"):
        check_epsilon(bad)
    check_epsilon(0.0)
    check_epsilon(None)


def test_a_nan_cannot_lower_a_max_or_a_min_whatever_the_order() -> None:
    for values in ([math.nan, 3.0], [3.0, math.nan]):
        records = [MetricRecord({"num-examples": 1, EPSILON: v}) for v in values]
        assert math.isnan(reduce_metrics(records)[EPSILON])
