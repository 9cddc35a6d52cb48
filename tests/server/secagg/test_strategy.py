"""SecAggStrategy around the real linear strategies, in Flower's own round loop (FakeGrid): the
strategy only ever receives the decoded aggregate; non-linear strategies are refused at start."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord

from contract import ARRAYS, CLIENTS, DROPPED, FROZEN_FACTORS, NUM_EXAMPLES, TRAIN_LOSS, parse_run_config
from contract import secagg as wire
from contract.secagg import SecAggConfig
from server.secagg import SecAggDriver, SecAggStrategy, check_secagg, secagg_summary
from server.secagg.strategy import ROUND_DROPPED
from strategies.fedit import FedIT
from strategies.fedsb import FedSB
from tests.server.secagg.federation import Federation


class Recording(FedIT):
    """FedIT that keeps every train reply it is handed."""

    seen: list[list[Message]]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.__dict__.setdefault("seen", []).append(replies)
        return super().aggregate_train(server_round, replies)


def _start(fed: Federation, strategy: SecAggStrategy, rounds: int) -> list[dict[str, np.ndarray]]:
    history: list[dict[str, np.ndarray]] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        history.append({k: a.numpy() for k, a in arrays.items()})
        return None

    initial = ArrayRecord({k: Array(v) for k, v in fed.global_arrays.items()})
    strategy.start(grid=fed.grid, initial_arrays=initial, num_rounds=rounds, timeout=10, evaluate_fn=evaluate,
                   train_config=ConfigRecord({}), evaluate_config=ConfigRecord({}))
    return history


def _wrap(inner: FedIT, fed: Federation, config: SecAggConfig | None = None) -> SecAggStrategy:
    return SecAggStrategy(inner, SecAggDriver(config or SecAggConfig(enabled=True), fed.ledger, weighted=inner.weighted))


def test_the_strategy_receives_only_the_aggregate_and_moves_to_the_fedavg_of_the_payloads() -> None:
    fed = Federation(k=4, seed=1)
    inner = Recording(fraction_evaluate=0.0, min_train_nodes=4, min_available_nodes=4)
    history = _start(fed, _wrap(inner, fed), rounds=1)
    (replies,) = inner.seen
    assert [r.metadata.src_node_id for r in replies] == fed.grid.node_ids  # one receipt per survivor
    received = [{k: a.numpy() for k, a in r.content[ARRAYS].items()} for r in replies]
    n = np.array([fed.num_examples[p] for p in range(4)], dtype=np.float64)
    for key, glob in fed.global_arrays.items():
        payloads = [fed.payload(p, fed.global_arrays)[key] for p in range(4)]
        fedavg = np.tensordot(n / n.sum(), np.stack(payloads).astype(np.float64), axes=1)
        for got in received:
            np.testing.assert_array_equal(got[key], received[0][key])  # every receipt is the same sum
            assert all(np.max(np.abs(got[key] - p)) > 1e-3 for p in payloads)  # and no client's payload
        assert np.max(np.abs(history[1][key] - fedavg)) < 2 * 1.0 / (2**22 - 1) + 1e-6  # + float32 rounding
    assert sum(int(r.content["metrics"][NUM_EXAMPLES]) for r in replies) == int(n.sum())
    loss = sum(fed.num_examples[p] * fed.losses[p] for p in range(4)) / n.sum()
    assert abs(float(replies[0].content["metrics"][TRAIN_LOSS]) - loss) < 1e-4


def test_fedsb_stops_sending_the_frozen_factors_once_nodes_confirmed_them() -> None:
    fed = Federation(k=3, shapes={"lora_R": (4, 4)})
    inner = FedSB(frozen_factors={"B": np.ones((6, 4), np.float32)}, frozen_hash="h", fraction_evaluate=0.0,
                  min_train_nodes=3, min_available_nodes=3)
    _start(fed, _wrap(inner, fed), rounds=2)
    collect = [ins for ins, _ in fed.grid.log if ins.metadata.message_type == wire.COLLECT]
    assert [FROZEN_FACTORS in ins.content for ins in collect] == [True] * 3 + [False] * 3
    assert fed.ledger.total(phase="setup") > 0 and inner.frozen.confirmed == set(fed.grid.node_ids)


def test_a_dropped_round_keeps_the_arrays_and_the_run_goes_on() -> None:
    fed = Federation(k=3, fail={(0, wire.COLLECT), (1, wire.COLLECT)})
    wrapped = _wrap(Recording(fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3), fed)
    history = _start(fed, wrapped, rounds=2)
    for arrays in history:
        for key, glob in fed.global_arrays.items():
            np.testing.assert_array_equal(arrays[key], glob)
    assert len(wrapped.last_dropped) == 2 and "secagg collect" in wrapped.last_dropped[0].reason


def test_dropouts_are_counted_in_the_round_metrics() -> None:
    fed = Federation(k=4, fail={(2, wire.COLLECT)})
    wrapped = _wrap(FedIT(fraction_evaluate=0.0, min_train_nodes=4, min_available_nodes=4), fed)
    fed_round = wrapped.configure_train(1, ArrayRecord({k: Array(v) for k, v in fed.global_arrays.items()}),
                                        ConfigRecord({}), fed.grid)
    assert list(fed_round) == []  # Flower's loop itself sends nothing
    _, metrics = wrapped.aggregate_train(1, [])
    assert (metrics[CLIENTS], metrics[DROPPED]) == (3, 1) and ROUND_DROPPED not in metrics


class _Task:
    def __init__(self, hooks: set[str]) -> None:
        self.hooks = hooks

    def implements(self, hook: str) -> bool:
        return hook in self.hooks


@pytest.mark.parametrize("name", ["fedex", "flora"])
def test_strategies_that_need_each_clients_factors_are_refused(name: str) -> None:
    config = parse_run_config({"secagg.enabled": True, "strategy.name": name})
    with pytest.raises(ValueError, match=f"strategy.name = {name}.*not a weighted sum.*`fedit`, `fedsb`, `ffa`"):
        check_secagg(config, _Task(set()))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["fedit", "fedsb", "ffa"])
def test_linear_strategies_are_accepted_and_plugin_reports_refused(name: str) -> None:
    config = parse_run_config({"secagg.enabled": True, "strategy.name": name})
    check_secagg(config, _Task(set()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="plugin reports"):
        check_secagg(config, _Task({"merge_reports"}))  # type: ignore[arg-type]
    check_secagg(parse_run_config({"strategy.name": "fedex"}), _Task({"merge_reports"}))  # type: ignore[arg-type]


def test_the_summary_says_what_was_masked_sent_in_plaintext_or_not_sent() -> None:
    assert secagg_summary(parse_run_config({}), []) == {}
    block = secagg_summary(parse_run_config({"secagg.enabled": True, "secagg.quantization-bits": 10}),
                           [{ROUND_DROPPED: 1}, {"clients": 3}])["secagg"]
    assert block["mean_error_bound"] == 2 * 1.0 / 1023 and block["rounds_dropped"] == 1
    assert set(block["plaintext"]) == set(wire.PUBLIC_METRICS) and "num-examples" in block["masked"]
    assert "partition-id" in block["not_sent"] and block["quantization-bits"] == 10
