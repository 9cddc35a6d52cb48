"""RoLoRA: alternating halves, exact every round, half of FedIT's traffic (element counts)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord

from contract import ARRAYS, CONFIG, SERVER_ROUND
from contract.factor_roles import FIXED_LAYERS, GLOBAL_FROM_VERSION, decode_layers
from strategies import build_strategy, strategy_info
from strategies.comm_cost import CommInputs
from strategies.fedit import FedIT
from strategies.rolora import RoLoRA, rolora_comm
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import from_record, lora_arrays, lora_layout, to_record
from tests.strategies.partial_client import NumpyPartialClient

MODULES = {"q": (6, 5), "v": (4, 7)}
R = 2
SCALE = 2.0


def _initial(seed: int = 0, head: bool = True) -> dict[str, np.ndarray]:
    arrays = lora_arrays(np.random.default_rng(seed), MODULES, R)
    for name in MODULES:
        arrays[f"{name}.lora_B.weight"][:] = 0.0  # LoRA starts with B = 0
    if not head:
        del arrays["classifier.weight"]
    return arrays


def _run(strategy, clients: int, rounds: int, *, head: bool = True, fail=None, counts=None):
    initial = _initial(head=head)
    client = NumpyPartialClient(initial, counts or [3 + 2 * i for i in range(clients)], fail=fail)
    grid = FakeGrid(client, clients)
    globals_after: dict[int, dict[str, np.ndarray]] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        globals_after[server_round] = from_record(arrays)
        return MetricRecord({})

    strategy.start(grid, to_record(initial), num_rounds=rounds, evaluate_fn=evaluate_fn)
    return grid, client, globals_after


def _train_log(grid: FakeGrid):
    return [(i, r) for i, r in grid.log if i.metadata.message_type.startswith("train")]


def test_registered_exact_with_a_comm_formula() -> None:
    info = strategy_info("rolora")
    assert info.exact and info.adapter_kinds == ("lora",)
    assert isinstance(build_strategy("rolora", layout=lora_layout(MODULES)), RoLoRA)


def test_odd_rounds_train_b_even_rounds_train_a() -> None:
    grid, _, _ = _run(RoLoRA(layout=lora_layout(MODULES, SCALE)), clients=3, rounds=4)
    for instruction, reply in _train_log(grid):
        server_round = int(instruction.content[CONFIG][SERVER_ROUND])
        fixed, trained = ("lora_A", "lora_B") if server_round % 2 else ("lora_B", "lora_A")
        assert decode_layers(instruction.content[CONFIG][FIXED_LAYERS]) == (fixed,)
        keys = set(reply.content[ARRAYS].keys())
        assert keys == {f"{m}.{trained}.weight" for m in MODULES} | {"classifier.weight"}


@pytest.mark.parametrize("clients", [1, 2, 5])
def test_every_round_the_global_model_is_the_mean_of_the_clients_models(clients: int) -> None:
    counts = [3 + 4 * i for i in range(clients)]
    _, client, globals_after = _run(RoLoRA(layout=lora_layout(MODULES, SCALE)), clients, rounds=4, counts=counts)
    p = np.array(counts, dtype=np.float64) / sum(counts)  # (K,)
    for server_round in range(1, 5):
        g = globals_after[server_round]
        for name in MODULES:
            a_key, b_key = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
            trained = [client.models[(server_round, pid)][1] for pid in range(clients)]
            mean_update = sum(  # Σ p_i s B_i A_i in float64: (m, n)
                p_i * SCALE * m[b_key].astype(np.float64) @ m[a_key].astype(np.float64) for p_i, m in zip(p, trained)
            )
            global_update = SCALE * g[b_key].astype(np.float64) @ g[a_key].astype(np.float64)
            scale = np.abs(mean_update).max()
            np.testing.assert_allclose(global_update, mean_update, rtol=0, atol=1e-6 * scale)
        head = sum(p_i * m["classifier.weight"].astype(np.float64) for p_i, m in zip(p, trained))
        np.testing.assert_allclose(g["classifier.weight"], head, rtol=1e-6, atol=1e-6)


def _elements(record: ArrayRecord) -> int:
    return sum(int(np.prod(a.shape)) for a in record.values())


def test_per_round_traffic_is_half_of_fedits_in_element_counts() -> None:
    clients, rounds = 3, 4
    # training traffic only (no federated evaluation, which would bring the changes ahead of training)
    rolora, _, _ = _run(RoLoRA(layout=lora_layout(MODULES, SCALE), fraction_evaluate=0.0), clients, rounds, head=False)
    fedit, _, _ = _run(FedIT(layout=lora_layout(MODULES, SCALE), fraction_evaluate=0.0), clients, rounds, head=False)
    inputs = CommInputs.of(MODULES, R, clients)
    for server_round in range(2, rounds + 1):  # round 1: every node's first, complete download
        def per_round(grid):
            down = up = 0
            for instruction, reply in _train_log(grid):
                if int(instruction.content[CONFIG][SERVER_ROUND]) == server_round:
                    down, up = down + _elements(instruction.content[ARRAYS]), up + _elements(reply.content[ARRAYS])
            return down, up
        (r_down, r_up), (f_down, f_up) = per_round(rolora), per_round(fedit)
        assert 2 * (r_down + r_up) == f_down + f_up
        phase = "b" if server_round % 2 else "a"
        cost = rolora_comm(inputs, phase=phase)
        assert (r_down, r_up) == (clients * cost.download, clients * cost.upload)
    assert rolora_comm(inputs).upload + rolora_comm(inputs).download == inputs.lora_factors


def test_a_node_whose_round_failed_is_sent_the_whole_adapter_next_time() -> None:
    strategy = RoLoRA(layout=lora_layout(MODULES, SCALE), fraction_evaluate=0.0)  # no evaluate round to re-sync it
    grid, client, globals_after = _run(strategy, clients=3, rounds=4, fail={(2, 1)})
    by_round = {}
    for instruction, reply in _train_log(grid):
        pid = int(instruction.metadata.dst_node_id) - grid.node_ids[0]
        by_round[(int(instruction.content[CONFIG][SERVER_ROUND]), pid)] = (instruction, reply)
    assert by_round[(2, 1)][1].has_error()
    third = by_round[(3, 1)][0]
    assert GLOBAL_FROM_VERSION not in third.content[CONFIG]  # the whole adapter
    assert len(third.content[ARRAYS]) == len(_initial())
    assert GLOBAL_FROM_VERSION in by_round[(3, 0)][0].content[CONFIG]  # the others: only the changes
    assert not by_round[(3, 1)][1].has_error() and not by_round[(4, 1)][1].has_error()
    start = client.models[(3, 1)][0]  # the failed node trains from the true global adapter again
    for key, value in globals_after[2].items():
        np.testing.assert_array_equal(start[key], value)


def test_partial_participation_stays_exact_and_never_errs() -> None:
    import random

    random.seed(3)
    strategy = RoLoRA(layout=lora_layout(MODULES, SCALE), fraction_train=0.5, min_available_nodes=4)
    grid, client, globals_after = _run(strategy, clients=4, rounds=6)
    assert not any(reply.has_error() for _, reply in grid.log)
    for (server_round, pid), (start, _) in client.models.items():
        previous = globals_after[server_round - 1] if server_round > 1 else _initial()
        for key, value in previous.items():
            np.testing.assert_array_equal(start[key], value)
