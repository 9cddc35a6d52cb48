"""Metric reductions and byte counting of the message contract (contract.records)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from contract import (
    ARRAYS,
    EPSILON,
    METRICS,
    NUM_EXAMPLES,
    TRAIN_LOSS,
    message_bytes,
    reduce_metrics,
    reduction_for,
    train_reply_content,
)
from tests.strategies.helpers import make_reply, to_record


def _rd(**metrics: float | int | list[float]) -> RecordDict:
    named = {k.replace("__", "-"): v for k, v in metrics.items()}
    return RecordDict({METRICS: MetricRecord(named)})


def test_loss_weighted_mean_epsilon_max_examples_sum() -> None:
    records = [
        _rd(num__examples=10, train_loss=1.0, epsilon=0.5, bytes_up=100),
        _rd(num__examples=30, train_loss=3.0, epsilon=2.0, bytes_up=250),
    ]
    got = reduce_metrics(records, NUM_EXAMPLES)
    assert got[TRAIN_LOSS] == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert got[EPSILON] == 2.0
    assert got[NUM_EXAMPLES] == 40 and isinstance(got[NUM_EXAMPLES], int)
    assert got["bytes_up"] == 350 and isinstance(got["bytes_up"], int)  # the `bytes_` prefix sums


def test_unknown_metric_defaults_to_weighted_mean_and_overrides_apply() -> None:
    records = [_rd(num__examples=1, acc=0.0, worst=5.0), _rd(num__examples=3, acc=1.0, worst=2.0)]
    assert reduction_for("acc") == "weighted_mean"
    got = reduce_metrics(records, overrides={"worst": "min"})
    assert got["acc"] == pytest.approx(0.75)
    assert got["worst"] == 2.0


def test_metric_missing_in_some_clients_is_reduced_over_holders() -> None:
    records = [_rd(num__examples=1, train_loss=4.0), _rd(num__examples=3), _rd(num__examples=1, epsilon=1.0)]
    got = reduce_metrics(records)
    assert got[TRAIN_LOSS] == pytest.approx(4.0)
    assert got[EPSILON] == 1.0
    assert got[NUM_EXAMPLES] == 5


def test_list_metrics_are_reduced_elementwise() -> None:
    records = [_rd(num__examples=1, curve=[1.0, 2.0]), _rd(num__examples=1, curve=[3.0, 6.0])]
    assert reduce_metrics(records)["curve"] == pytest.approx([2.0, 4.0])


@pytest.mark.parametrize("values", [([1.0], [1.0, 2.0]), (1.0, [1.0]), ([1.0], 2.0)], ids=["lengths", "scalar-list", "list-scalar"])
def test_metrics_that_do_not_line_up_are_left_out_not_raised(values: tuple) -> None:
    records = [_rd(num__examples=1, curve=values[0], train_loss=1.0), _rd(num__examples=3, curve=values[1], train_loss=3.0)]
    got = reduce_metrics(records)
    assert "curve" not in got
    assert got[TRAIN_LOSS] == pytest.approx(2.5) and got[NUM_EXAMPLES] == 4


def test_accepts_bare_metric_records_and_requires_the_weight() -> None:
    got = reduce_metrics([MetricRecord({NUM_EXAMPLES: 2, "x": 1.0}), MetricRecord({NUM_EXAMPLES: 2, "x": 3.0})])
    assert got["x"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="num-examples"):
        reduce_metrics([MetricRecord({"x": 1.0})])


def test_usable_as_fedavg_metrics_aggregator() -> None:
    strategy = FedAvg(train_metrics_aggr_fn=reduce_metrics, evaluate_metrics_aggr_fn=reduce_metrics)
    records = [_rd(num__examples=2, epsilon=1.0), _rd(num__examples=6, epsilon=3.0)]
    assert strategy.train_metrics_aggr_fn(records, strategy.weighted_by_key)[EPSILON] == 3.0


def test_partial_binds_overrides() -> None:
    fn = functools.partial(reduce_metrics, overrides={TRAIN_LOSS: "max"})
    assert fn([_rd(num__examples=1, train_loss=1.0), _rd(num__examples=9, train_loss=2.0)], NUM_EXAMPLES)[
        TRAIN_LOSS
    ] == 2.0


def test_message_bytes_counts_every_record_both_directions() -> None:
    arrays = {"w": np.zeros((10, 10), np.float32)}
    content = RecordDict(
        {ARRAYS: to_record(arrays), METRICS: MetricRecord({NUM_EXAMPLES: 3}), "config": ConfigRecord({"lr": 0.1})}
    )
    want = sum(r.count_bytes() for r in content.values())
    assert want > 400  # 400 raw bytes plus npy header and keys
    assert message_bytes(content) == want
    reply = make_reply(arrays, 3)
    assert message_bytes(reply) == sum(r.count_bytes() for r in reply.content.values())
    assert message_bytes(make_reply(None, error="boom")) == 0


def test_train_reply_content_follows_the_contract() -> None:
    content = train_reply_content(to_record({"w": np.ones(2)}), 5, {TRAIN_LOSS: 0.5})
    assert set(content.keys()) == {ARRAYS, METRICS}
    assert content[METRICS][NUM_EXAMPLES] == 5
    with pytest.raises(ValueError, match="positive int"):
        train_reply_content(to_record({"w": np.ones(2)}), 0)
