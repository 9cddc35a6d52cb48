"""The base-versioning component FedEx-LoRA and FLoRA share, and the two strategies' own checks."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, MessageType, MetricRecord, RecordDict

from contract import ARRAYS, CONFIG
from contract.base_delta import BASE_DELTA, BASE_FROM_VERSION, BASE_VERSION
from strategies import FedExLoRA, FLoRA
from strategies.base_versioning import BaseVersioning
from strategies.layout import LoraPair
from strategies.maths.transport import ResidualTransport
from strategies.protocol import DroppedReply
from strategies.validation import MalformedReply
from tests.strategies.fake_grid import set_task_identity
from tests.strategies.helpers import lora_arrays, lora_layout, make_reply, to_record

RNG = np.random.default_rng(11)
SHAPES = {"q": (6, 8)}


def delta() -> dict[str, ResidualTransport]:
    return {"q": ResidualTransport.from_factors(RNG.standard_normal((6, 1)), RNG.standard_normal((1, 8)))}


@pytest.fixture(autouse=True)
def _identity() -> None:
    set_task_identity()  # Message(...) reads Flower's process-global task identity


def round_record() -> RecordDict:
    return RecordDict({ARRAYS: to_record(lora_arrays(RNG, SHAPES, r=2)), CONFIG: ConfigRecord({"server-round": 3})})


def test_each_node_gets_the_delta_from_the_version_it_holds() -> None:
    versions = BaseVersioning()
    assert (versions.version, versions.base_deltas()) == (0, {})
    first = versions.messages(round_record(), [1], MessageType.TRAIN)[0]
    assert BASE_DELTA not in first.content and first.content[CONFIG][BASE_VERSION] == 0
    versions.fold(delta())
    versions.fold(delta())
    versions.note_replies([make_reply(None, metrics={BASE_VERSION: 2}, node_id=7),
                           make_reply(None, metrics={BASE_VERSION: 1}, node_id=8)])
    by_node = {m.metadata.dst_node_id: m for m in versions.messages(round_record(), [7, 8, 9], MessageType.TRAIN)}
    assert BASE_DELTA not in by_node[7].content  # already at version 2
    assert by_node[8].content[CONFIG][BASE_FROM_VERSION] == 1 and BASE_DELTA in by_node[8].content
    assert by_node[9].content[CONFIG][BASE_FROM_VERSION] == 0 and BASE_DELTA in by_node[9].content
    assert all(m.content[CONFIG][BASE_VERSION] == 2 and m.content[CONFIG]["server-round"] == 3 for m in by_node.values())


@pytest.mark.parametrize("reported", [-1, 3, 1.5, [1]])
def test_an_impossible_reported_version_is_ignored(reported: object) -> None:
    versions = BaseVersioning()
    versions.fold(delta())
    versions.fold(delta())
    versions.note_replies([make_reply(None, metrics={BASE_VERSION: 1}, node_id=7)])
    versions.note_replies([make_reply(None, metrics={BASE_VERSION: reported}, node_id=7)])  # type: ignore[dict-item]
    assert versions.node_version == {7: 1}
    versions.messages(round_record(), [7], MessageType.TRAIN)  # still serves the node


def test_the_state_round_trips_bit_for_bit() -> None:
    versions = BaseVersioning()
    for _ in range(3):
        versions.fold(delta())
    arrays, meta = versions.export_state()
    again = BaseVersioning()
    again.restore_state(arrays, meta)
    assert again.version == 3 and again.node_version == {}
    for module, d in versions.base_deltas().items():
        assert again.base_deltas()[module].tobytes() == d.tobytes()
    assert BaseVersioning().export_state() == ({}, {})


def test_fedex_and_flora_name_themselves_in_their_errors() -> None:
    with pytest.raises(ValueError, match="strategy.name = fedex needs the adapter layout"):
        FedExLoRA()
    with pytest.raises(ValueError, match="strategy.name = flora needs the adapter layout"):
        FLoRA()
    abba = {"m": LoraPair("m.A", "m.B", 1.0, a2_key="m.A2", b2_key="m.B2")}
    with pytest.raises(ValueError, match=r"flora stacks LoRA pairs B·A; the layout has modules of form \['hadamard-pairs'\]"):
        FLoRA(layout=abba)
    assert FedExLoRA(layout=abba).versions.version == 0  # FedEx-LoRA folds ABBA's residual


def test_flora_folds_the_mean_update_and_restarts_the_adapter() -> None:
    layout = lora_layout(SHAPES, scale=2.0)
    clients = [lora_arrays(RNG, SHAPES, r=2) for _ in range(3)]
    p = np.array([0.5, 0.25, 0.25])
    strategy = FLoRA(layout=layout, seed=5)
    merged = strategy.aggregate_arrays(1, clients, p)
    ideal = sum(pi * 2.0 * c["q.lora_B.weight"].astype(np.float64) @ c["q.lora_A.weight"] for pi, c in zip(p, clients, strict=True))
    np.testing.assert_allclose(strategy.base_deltas()["q"], ideal, rtol=1e-5, atol=1e-6)
    assert not merged["q.lora_B.weight"].any() and np.abs(merged["q.lora_A.weight"]).max() <= 1 / np.sqrt(8)
    np.testing.assert_allclose(merged["classifier.weight"], sum(pi * c["classifier.weight"] for pi, c in zip(p, clients, strict=True)), rtol=1e-6)


def test_only_accepted_replies_move_a_node_and_a_dropped_one_is_served_from_version_0() -> None:
    versions = BaseVersioning()
    versions.fold(delta())
    versions.fold(delta())
    versions.note_replies([make_reply(None, metrics={BASE_VERSION: 2}, node_id=7),
                           make_reply(None, metrics={BASE_VERSION: 2}, node_id=8)])
    replies = [make_reply(None, metrics={BASE_VERSION: 1}, node_id=7), make_reply(None, metrics={BASE_VERSION: 1}, node_id=8),
               make_reply(None, error="failed", node_id=9)]
    versions.note_replies(replies, [DroppedReply(8, "bad", "metric-range"), DroppedReply(9, "failed", "error-reply")])
    assert versions.node_version == {7: 1}  # 8's reply was dropped: forgotten; 9 sent an error: unchanged (never known)
    by_node = {m.metadata.dst_node_id: m for m in versions.messages(round_record(), [7, 8], MessageType.TRAIN)}
    assert by_node[7].content[CONFIG][BASE_FROM_VERSION] == 1
    assert by_node[8].content[CONFIG][BASE_FROM_VERSION] == 0  # the cumulative delta, which every node accepts


def test_a_base_version_the_server_never_sent_is_a_malformed_reply() -> None:
    versions = BaseVersioning()
    versions.fold(delta())
    versions.check_reported(MetricRecord({BASE_VERSION: 1}))
    versions.check_reported(MetricRecord({}))
    with pytest.raises(MalformedReply, match="`base-version` = 999, but the server's base is at version 1") as info:
        versions.check_reported(MetricRecord({BASE_VERSION: 999}))
    assert info.value.code == "protocol"
