"""FedIT.aggregate_train / aggregate_evaluate on hand-built reply messages."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from contract import CLIENTS, DEV_REL_MEAN, DROPPED, EPSILON, METRICS, NUM_EXAMPLES, TRAIN_LOSS
from strategies.fedit import FedIT
from strategies.layout import LoraPair
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import from_record, lora_arrays, lora_layout, make_reply, to_record

MODULES = {"q": (6, 5), "v": (4, 5)}  # name -> (m, n)
R = 2


def _unused(message: Message, context: object) -> Message:
    raise AssertionError("no client should be called")


def _configured(strategy: FedIT, global_arrays: dict[str, np.ndarray]) -> list[Message]:
    """Run configure_train so the strategy knows what it sent (as Strategy.start does)."""
    return list(strategy.configure_train(1, to_record(global_arrays), ConfigRecord(), FakeGrid(_unused, 3)))


def _independent(clients: list[dict[str, np.ndarray]], w: list[float]) -> dict[str, np.ndarray]:
    total = sum(w)
    return {
        k: sum((wi / total) * c[k].astype(np.float64) for c, wi in zip(clients, w, strict=True)).astype(v.dtype)
        for k, v in clients[0].items()
    }


@pytest.fixture
def setup() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    global_arrays = lora_arrays(rng, MODULES, R)
    clients = [lora_arrays(rng, MODULES, R) for _ in range(4)]
    return global_arrays, clients


@pytest.mark.parametrize("weighted", [True, False])
def test_aggregate_train_equals_independent_mean(setup, weighted: bool) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    global_arrays, clients = setup
    n = [10, 30, 5, 55]
    strategy = FedIT(weighted=weighted)
    sent = _configured(strategy, global_arrays)
    assert len(sent) == 3  # min_available_nodes=1, fraction 1.0 of 3 nodes
    replies = [
        make_reply(c, n_i, {TRAIN_LOSS: float(i), EPSILON: 0.1 * i}, node_id=100 + i)
        for i, (c, n_i) in enumerate(zip(clients, n, strict=True))
    ]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    assert arrays is not None and metrics is not None
    want = _independent(clients, [float(x) for x in n] if weighted else [1.0] * 4)
    got = from_record(arrays)
    assert list(got) == list(global_arrays)  # key order as sent
    for key in want:
        assert got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7)
    assert metrics[CLIENTS] == 4 and metrics[DROPPED] == 0
    assert metrics[NUM_EXAMPLES] == 100
    assert metrics[TRAIN_LOSS] == pytest.approx((0 * 10 + 1 * 30 + 2 * 5 + 3 * 55) / 100)
    assert metrics[EPSILON] == pytest.approx(0.3)
    assert strategy.last_dropped == []


def test_unweighted_is_plain_mean(setup) -> None:  # type: ignore[no-untyped-def]
    global_arrays, clients = setup
    strategy = FedIT(weighted=False)
    _configured(strategy, global_arrays)
    arrays, _ = strategy.aggregate_train(1, [make_reply(c, 1 + 100 * i) for i, c in enumerate(clients)])
    assert arrays is not None
    want = np.mean([c["q.lora_A.weight"].astype(np.float64) for c in clients], axis=0).astype(np.float32)
    np.testing.assert_allclose(arrays["q.lora_A.weight"].numpy(), want, rtol=1e-6)


BAD_CASES = {  # case -> part of the logged reason
    "wrong shape": "has shape (3, 5), expected (2, 5)",
    "NaN": "10 non-finite values",
    "missing key": "missing ['q.lora_A.weight']",
    "extra key": "extra ['extra']",
    "wrong dtype": "dtype float64, expected float32",
    "missing num-examples": "missing `num-examples`",
    "error reply": "error reply (code 2): CUDA out of memory",
    "no metrics": "missing record(s) ['metrics']",
}


def _bad_replies(global_arrays: dict[str, np.ndarray]) -> dict[str, Message]:
    g = global_arrays
    key = "q.lora_A.weight"
    nan = dict(g, **{key: np.full_like(g[key], np.nan)})
    return {
        "wrong shape": make_reply(dict(g, **{key: np.zeros((R + 1, 5), np.float32)}), 10, node_id=201),
        "NaN": make_reply(nan, 10, node_id=202),
        "missing key": make_reply({k: v for k, v in g.items() if k != key}, 10, node_id=203),
        "extra key": make_reply(dict(g, extra=np.zeros(1, np.float32)), 10, node_id=204),
        "wrong dtype": make_reply(dict(g, **{key: g[key].astype(np.float64)}), 10, node_id=205),
        "missing num-examples": make_reply(g, None, node_id=206),
        "error reply": make_reply(None, error="CUDA out of memory", node_id=207),
        "no metrics": make_reply(None, content=RecordDict({"arrays": to_record(g)}), node_id=208),
    }


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_each_malformed_reply_is_dropped_and_the_rest_aggregate(setup, case: str, caplog) -> None:  # type: ignore[no-untyped-def]
    global_arrays, clients = setup
    strategy = FedIT()
    _configured(strategy, global_arrays)
    bad = _bad_replies(global_arrays)[case]
    good = [make_reply(c, n, node_id=100 + i) for i, (c, n) in enumerate(zip(clients[:2], [1, 3], strict=True))]

    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, [good[0], bad, good[1]])

    assert arrays is not None and metrics is not None
    assert metrics[DROPPED] == 1 and metrics[CLIENTS] == 2 and metrics[NUM_EXAMPLES] == 4
    want = _independent(clients[:2], [1.0, 3.0])
    for key, value in from_record(arrays).items():
        np.testing.assert_allclose(value, want[key], rtol=1e-6, atol=1e-7)
    node = bad.metadata.src_node_id
    assert len(strategy.last_dropped) == 1
    dropped_node, reason = strategy.last_dropped[0].node_id, strategy.last_dropped[0].reason
    assert dropped_node == node and BAD_CASES[case] in reason
    assert any(f"node {node}" in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)


def test_all_dropped_returns_no_arrays_but_reports_drops(setup) -> None:  # type: ignore[no-untyped-def]
    global_arrays, _ = setup
    strategy = FedIT()
    _configured(strategy, global_arrays)
    bad = list(_bad_replies(global_arrays).values())
    assert len(bad) == len(BAD_CASES)
    arrays, metrics = strategy.aggregate_train(1, bad)
    assert arrays is None
    assert metrics == MetricRecord({CLIENTS: 0, DROPPED: len(bad)})
    assert len(strategy.last_dropped) == len(bad)
    assert strategy.aggregate_train(2, []) == (None, None)
    assert strategy.last_dropped == []


def test_deviation_metrics_with_layout(setup) -> None:  # type: ignore[no-untyped-def]
    global_arrays, clients = setup
    strategy = FedIT(layout=lora_layout(MODULES))
    _configured(strategy, global_arrays)
    _, metrics = strategy.aggregate_train(1, [make_reply(c, 5) for c in clients])
    assert metrics is not None
    dev = {k: v for k, v in metrics.items() if k.startswith("dev_rel/")}
    assert set(dev) == {"dev_rel/q", "dev_rel/v"}
    assert all(isinstance(v, float) and 0 < v for v in dev.values())
    assert metrics[DEV_REL_MEAN] == pytest.approx(np.mean(list(dev.values())))

    # clients that trained only B (shared A) deviate by 0
    shared_a = [dict(c, **{f"{m}.lora_A.weight": global_arrays[f"{m}.lora_A.weight"] for m in MODULES}) for c in clients]
    _, metrics = strategy.aggregate_train(1, [make_reply(c, 5) for c in shared_a])
    assert metrics is not None and metrics[DEV_REL_MEAN] < 1e-12


def test_layout_that_does_not_match_the_arrays_fails_before_sending(setup) -> None:  # type: ignore[no-untyped-def]
    global_arrays, _ = setup
    strategy = FedIT(layout={"k": LoraPair("k.A", "k.B", 1.0)})
    with pytest.raises(ValueError, match="does not match the arrays"):
        _configured(strategy, global_arrays)


def test_aggregate_before_configure_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before configure_train"):
        FedIT().aggregate_train(1, [])


def test_aggregate_evaluate_drops_bad_replies() -> None:
    strategy = FedIT()
    good = [
        make_reply(None, content=RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: n, "eval_loss": l})}), node_id=i)
        for i, (n, l) in enumerate([(1, 2.0), (3, 4.0)], start=100)
    ]
    bad = [
        make_reply(None, error="boom", node_id=300),
        make_reply(None, content=RecordDict({METRICS: MetricRecord({"eval_loss": 1.0})}), node_id=301),
    ]
    metrics = strategy.aggregate_evaluate(1, [good[0], *bad, good[1]])
    assert metrics is not None
    assert metrics["eval_loss"] == pytest.approx(3.5)
    assert metrics[DROPPED] == 2 and metrics[CLIENTS] == 2
    assert [d.node_id for d in strategy.last_dropped_evaluate] == [300, 301]
    assert strategy.aggregate_evaluate(1, []) is None
