"""FedSA-LoRA: only A (and the head) travels and is averaged; every client's B stays in its state."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord

from client.factor_roles import STATE_LOCAL
from contract import ARRAYS, CONFIG
from contract.factor_roles import LOCAL_LAYERS, decode_layers
from strategies import build_strategy, strategy_info
from strategies.comm_cost import CommInputs
from strategies.fedsa import FedSALoRA, fedsa_comm
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import from_record, lora_arrays, lora_layout, to_record
from tests.strategies.partial_client import NumpyPartialClient

MODULES = {"q": (6, 5), "v": (4, 7)}
R = 2


def _initial() -> dict[str, np.ndarray]:
    arrays = lora_arrays(np.random.default_rng(0), MODULES, R)
    for name in MODULES:
        arrays[f"{name}.lora_B.weight"][:] = 0.0
    return arrays


def _run(clients: int = 3, rounds: int = 3):
    initial = _initial()
    client = NumpyPartialClient(initial, [4 + 3 * i for i in range(clients)])
    grid = FakeGrid(client, clients)
    globals_after: dict[int, dict[str, np.ndarray]] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        globals_after[server_round] = from_record(arrays)
        return MetricRecord({})

    FedSALoRA(layout=lora_layout(MODULES)).start(grid, to_record(initial), num_rounds=rounds, evaluate_fn=evaluate_fn)
    return grid, client, globals_after


def test_registered_not_exact() -> None:
    info = strategy_info("fedsa")
    assert not info.exact and info.adapter_kinds == ("lora",)
    assert isinstance(build_strategy("fedsa", layout=lora_layout(MODULES)), FedSALoRA)
    cost = fedsa_comm(CommInputs.of(MODULES, R))
    assert cost == (R * 12, R * 12, 0)  # r·Σn each way


def test_b_is_never_sent_nor_returned() -> None:
    grid, _, _ = _run()
    assert grid.log
    for instruction, reply in grid.log:
        assert decode_layers(instruction.content[CONFIG][LOCAL_LAYERS]) == ("lora_B",)
        assert not any(".lora_B." in key for key in instruction.content[ARRAYS].keys())
        assert {k for k in instruction.content[ARRAYS].keys()} == {f"{m}.lora_A.weight" for m in MODULES} | {"classifier.weight"}
        if ARRAYS in reply.content.array_records:
            assert not any(".lora_B." in key for key in reply.content[ARRAYS].keys())


def test_a_is_the_weighted_mean_and_the_global_b_stays_zero() -> None:
    _, client, globals_after = _run(clients=3, rounds=2)
    counts = np.array([4, 7, 10], dtype=np.float64)
    p = counts / counts.sum()
    for server_round in (1, 2):
        g = globals_after[server_round]
        for name in MODULES:
            a_mean = sum(p_i * client.models[(server_round, i)][1][f"{name}.lora_A.weight"].astype(np.float64)
                         for i, p_i in enumerate(p))
            np.testing.assert_allclose(g[f"{name}.lora_A.weight"], a_mean, rtol=1e-6, atol=1e-6)
            assert not np.any(g[f"{name}.lora_B.weight"])


@pytest.mark.parametrize("rounds", [2, 3])
def test_each_client_trains_on_from_its_own_b(rounds: int) -> None:
    grid, client, _ = _run(clients=3, rounds=rounds)
    for pid, node in enumerate(grid.node_ids):
        for server_round in range(2, rounds + 1):
            start = client.models[(server_round, pid)][0]
            previous = client.models[(server_round - 1, pid)][1]
            for name in MODULES:
                key = f"{name}.lora_B.weight"
                np.testing.assert_array_equal(start[key], previous[key])  # its own B, not the server's zeros
        stored = {k: a.numpy() for k, a in grid.contexts[node].state[STATE_LOCAL].items()}
        assert set(stored) == {f"{m}.lora_B.weight" for m in MODULES}  # only B: bounded, one per module
        for key, value in stored.items():
            np.testing.assert_array_equal(value, client.models[(rounds, pid)][1][key])
    first = client.models[(1, 0)][0]
    assert not any(np.any(first[f"{m}.lora_B.weight"]) for m in MODULES)  # a new client starts from B = 0


def test_without_federated_evaluation_it_warns_that_no_personalised_score_comes(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("WARNING")
    FedSALoRA(layout=lora_layout(MODULES), fraction_evaluate=0.0)
    assert "personalised score" in caplog.text
    caplog.clear()
    FedSALoRA(layout=lora_layout(MODULES), fraction_evaluate=0.5)
    assert "personalised score" not in caplog.text
