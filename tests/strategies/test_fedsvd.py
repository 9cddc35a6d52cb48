"""FedSVD: clients train and send only B over the round's A; the server's SVD gives an orthonormal A."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord

from contract import ARRAYS, CONFIG, SERVER_ROUND
from contract.factor_roles import FIXED_LAYERS, decode_layers
from strategies import build_strategy, strategy_info
from strategies.comm_cost import CommInputs
from strategies.fedsvd import ORTHO_ERROR, FedSVD, fedsvd_comm
from strategies.maths.svd_refactor import orthonormal_refactor
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import from_record, lora_arrays, lora_layout, to_record
from tests.strategies.partial_client import NumpyPartialClient

MODULES = {"q": (6, 5), "v": (4, 7)}
R = 2
SCALE = 2.0


def _run(clients: int, rounds: int):
    initial = lora_arrays(np.random.default_rng(1), MODULES, R)
    for name in MODULES:
        initial[f"{name}.lora_B.weight"][:] = 0.0
    counts = [2 + 5 * i for i in range(clients)]
    client = NumpyPartialClient(initial, counts)
    grid = FakeGrid(client, clients)
    globals_after: dict[int, dict[str, np.ndarray]] = {0: initial}
    train_metrics: dict[int, MetricRecord] = {}
    strategy = FedSVD(layout=lora_layout(MODULES, SCALE), fraction_evaluate=0.0)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        globals_after[server_round] = from_record(arrays)
        return MetricRecord({})

    result = strategy.start(grid, to_record(initial), num_rounds=rounds, evaluate_fn=evaluate_fn)
    train_metrics = dict(result.train_metrics_clientapp)
    return grid, client, globals_after, np.array(counts, dtype=np.float64) / sum(counts), train_metrics


def test_registered_exact() -> None:
    info = strategy_info("fedsvd")
    assert info.exact and info.adapter_kinds == ("lora",)
    assert isinstance(build_strategy("fedsvd", layout=lora_layout(MODULES)), FedSVD)
    cost = fedsvd_comm(CommInputs.of(MODULES, R))
    assert cost == (R * 10, R * 22, 0)  # B up; A' and B' down


def test_clients_train_and_send_only_b_over_the_sent_a() -> None:
    grid, client, globals_after, _, _ = _run(clients=3, rounds=3)
    for instruction, reply in grid.log:
        server_round = int(instruction.content[CONFIG][SERVER_ROUND])
        assert decode_layers(instruction.content[CONFIG][FIXED_LAYERS]) == ("lora_A",)
        sent = from_record(instruction.content[ARRAYS])
        assert set(sent) == set(globals_after[0])  # A' and B' (and the head) are sent
        for key, value in sent.items():
            np.testing.assert_array_equal(value, globals_after[server_round - 1][key])
        assert set(reply.content[ARRAYS].keys()) == {f"{m}.lora_B.weight" for m in MODULES} | {"classifier.weight"}


@pytest.mark.parametrize("clients", [1, 2, 5])
def test_a_is_orthonormal_and_the_global_model_is_the_clients_mean(clients: int) -> None:
    _, client, globals_after, p, metrics = _run(clients=clients, rounds=3)
    for server_round in (1, 2, 3):
        g = globals_after[server_round]
        for name in MODULES:
            a_key, b_key = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
            a = g[a_key].astype(np.float64)  # (r, n)
            np.testing.assert_allclose(a @ a.T, np.eye(R), rtol=0, atol=1e-6)
            trained = [client.models[(server_round, i)][1] for i in range(clients)]
            mean_update = sum(p_i * SCALE * m[b_key].astype(np.float64) @ m[a_key].astype(np.float64)
                              for p_i, m in zip(p, trained))  # Σ p_i s B_i A: (m, n)
            global_update = SCALE * g[b_key].astype(np.float64) @ a
            np.testing.assert_allclose(global_update, mean_update, rtol=0, atol=1e-6 * np.abs(mean_update).max())
        assert 0 <= metrics[server_round][ORTHO_ERROR] <= 1e-6


@pytest.mark.parametrize(("m", "r", "n"), [(8, 4, 10), (3, 4, 10), (20, 4, 6), (16, 16, 16)])
def test_orthonormal_refactor_keeps_the_product(m: int, r: int, n: int) -> None:
    rng = np.random.default_rng(m * r * n)
    b, a = rng.standard_normal((m, r)), rng.standard_normal((r, n))
    b_new, a_new = orthonormal_refactor(b, a)
    assert b_new.shape == (m, r) and a_new.shape == (r, n)
    np.testing.assert_allclose(b_new @ a_new, b @ a, rtol=0, atol=1e-12 * np.abs(b @ a).max())
    np.testing.assert_allclose(a_new @ a_new.T, np.eye(r), rtol=0, atol=1e-12)
    norms = np.linalg.norm(b_new, axis=0)
    assert np.all(np.diff(norms[: min(m, r)]) <= 1e-12)  # singular values descending


def test_orthonormal_refactor_of_b_zero_is_an_orthonormal_a_and_b_zero() -> None:
    a = np.random.default_rng(0).standard_normal((3, 9))
    b_new, a_new = orthonormal_refactor(np.zeros((5, 3)), a)
    assert not np.any(b_new)
    np.testing.assert_allclose(a_new @ a_new.T, np.eye(3), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("b", "a", "match"), [
    (np.ones((4, 3)), np.ones((2, 5)), "chain"),
    (np.ones((4, 6)), np.ones((6, 5)), "more rows"),
    (np.ones((4, 2)), np.ones((2, 5)), "rank deficient"),
])
def test_orthonormal_refactor_refuses_what_it_cannot_do(b: np.ndarray, a: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        orthonormal_refactor(b, a)
