"""The wrapper chain: order by construction, each layer holds its typed inner, nothing falls through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flwr.serverapp.strategy import FedAvg

from client.tasks.arithmetic import ArithmeticWordProblems
from server.metering import ByteLedger, Metered
from server.plugin_relay import PluginRelay
from server.round_driver import RoundDriver
from server.strategy_chain import wrap_strategy
from strategies.fedit import FedIT


class BroadcastProbe(ArithmeticWordProblems):
    """Arithmetic that remembers the broadcasts installed on it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.installed: list[dict[str, Any]] = []

    def apply_broadcast(self, state: dict[str, Any]) -> None:
        self.installed.append(state)


def test_the_chain_is_driver_meter_audit_codec_relay_strategy_and_each_layer_holds_the_next(tmp_path: Path) -> None:
    strategy, ledger = FedIT(), ByteLedger()
    chain = wrap_strategy(strategy, task=BroadcastProbe(seed=0, max_length=32), folder=tmp_path, ledger=ledger, round_offset=2,
                          broadcast=None, wire_dtype="bfloat16")
    assert chain.driver.inner is chain.meter and chain.meter.inner is chain.audit and chain.audit.inner is chain.codec
    assert chain.codec.inner is chain.relay and chain.relay.inner is strategy
    assert chain.codec.wire_dtype == "bfloat16" and chain.audit.audit is None
    assert chain.strategy is strategy and chain.meter.ledger is ledger and chain.driver.offset == 2


def test_a_wrapper_refuses_anything_but_the_layer_it_wraps(tmp_path: Path) -> None:
    strategy = FedIT()
    relay = PluginRelay(strategy, BroadcastProbe(seed=0, max_length=32), tmp_path)
    with pytest.raises(TypeError, match="Metered wraps a Audited, got FedIT; the order is RoundDriver -> Metered -> Audited"):
        Metered(strategy, ByteLedger())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RoundDriver wraps a Metered, got PluginRelay"):
        RoundDriver(relay, offset=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PluginRelay wraps a CorollaStrategy, got FedAvg"):
        PluginRelay(FedAvg(), BroadcastProbe(seed=0, max_length=32), tmp_path)  # type: ignore[arg-type]


def test_no_member_of_an_inner_layer_is_reachable_through_an_outer_one(tmp_path: Path) -> None:
    chain = wrap_strategy(FedIT(), task=BroadcastProbe(seed=0, max_length=32), folder=tmp_path, ledger=ByteLedger(), round_offset=0,
                          broadcast=None)
    for outer, name in ((chain.driver, "ledger"), (chain.driver, "last_dropped"), (chain.meter, "round_metrics"),
                        (chain.meter, "export_state"), (chain.relay, "base_deltas")):
        assert not hasattr(outer, name), (type(outer).__name__, name)


def test_the_relay_starts_from_a_saved_broadcast_and_installs_it_on_the_server_task(tmp_path: Path) -> None:
    task = BroadcastProbe(seed=0, max_length=32)
    saved = {"round": 3, "lexicon": ["a"]}
    chain = wrap_strategy(FedIT(), task=task, folder=tmp_path, ledger=ByteLedger(), round_offset=3, broadcast=saved)
    assert chain.relay.broadcast == saved and task.installed == [saved]
    fresh = BroadcastProbe(seed=0, max_length=32)
    assert wrap_strategy(FedIT(), task=fresh, folder=tmp_path, ledger=ByteLedger(), round_offset=0,
                         broadcast=None).relay.broadcast is None and fresh.installed == []


def test_the_driver_hands_replies_on_in_partition_order_even_when_one_is_malformed(tmp_path: Path) -> None:
    from flwr.app import Message, MetricRecord, RecordDict  # noqa: PLC0415

    from tests.strategies.fake_grid import set_task_identity  # noqa: PLC0415

    set_task_identity()
    seen: list[int] = []

    class Recording(FedIT):
        def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN202 - Flower's signature
            seen.extend(int(r.metadata.src_node_id) for r in replies)
            return None, None

    def reply(node: int, partition: object) -> Message:
        metrics = MetricRecord({"num-examples": 1})
        if partition is not None:
            metrics["partition-id"] = partition  # type: ignore[assignment]
        instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
        return Message(RecordDict({"metrics": metrics}), reply_to=instruction)  # from node `node`

    chain = wrap_strategy(Recording(), task=BroadcastProbe(seed=0, max_length=32), folder=tmp_path, ledger=ByteLedger(),
                          round_offset=0, broadcast=None)
    chain.driver.aggregate_train(1, [reply(30, 2), reply(10, [1, 2]), reply(20, 0), reply(40, None)])
    assert seen == [10, 40, 20, 30]  # unreadable partition ids first (by node), then partitions 0, 2
