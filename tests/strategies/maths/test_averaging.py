"""Numeric checks of strategies.maths.averaging, .deviation and .residual against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.maths.averaging import aggregation_weights, weighted_mean
from strategies.maths.deviation import lora_deviation
from strategies.maths.residual import lora_residual
from strategies.layout import LoraPair

RNG_SEED = 1234


def _clients(k: int, dtype: str = "float32", seed: int = RNG_SEED) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "a": rng.standard_normal((4, 6)).astype(dtype),
            "b": rng.standard_normal((5,)).astype(dtype),
            "c": rng.standard_normal(()).astype(dtype),
        }
        for _ in range(k)
    ]


def _independent_mean(clients: list[dict[str, np.ndarray]], w: list[float]) -> dict[str, np.ndarray]:
    """Per key, per element, in float64, by explicit loops."""
    total = float(sum(w))
    out = {}
    for key, ref in clients[0].items():
        flat = np.zeros(ref.size, dtype=np.float64)
        for j in range(ref.size):
            flat[j] = sum(
                (wi / total) * float(c[key].reshape(-1)[j]) for c, wi in zip(clients, w, strict=True)
            )
        out[key] = flat.reshape(ref.shape).astype(ref.dtype)
    return out


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("weighted", [True, False])
def test_weighted_mean_matches_independent_computation(k: int, weighted: bool) -> None:
    # Prepare
    clients = _clients(k)
    n = [7, 30, 1, 12, 50][:k]
    p = aggregation_weights(n, weighted)
    w = [float(x) for x in n] if weighted else [1.0] * k
    # Execute
    got = weighted_mean(clients, p)
    # Assert
    want = _independent_mean(clients, w)
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype == np.float32
        assert got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_identical_replies_aggregate_to_identity(k: int) -> None:
    one = _clients(1)[0]
    got = weighted_mean([one] * k, aggregation_weights([3, 9, 1, 4, 4][:k], True))
    for key, value in one.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("weighted", [True, False])
def test_weights_sum_to_one(weighted: bool) -> None:
    p = aggregation_weights([3, 1, 6, 10], weighted)
    assert p.dtype == np.float64
    assert p.sum() == pytest.approx(1.0, abs=1e-15)
    expected = np.array([0.15, 0.05, 0.3, 0.5]) if weighted else np.full(4, 0.25)
    np.testing.assert_allclose(p, expected, rtol=1e-15)


def test_unnormalised_weights_are_normalised() -> None:
    clients = _clients(3)
    np.testing.assert_array_equal(
        weighted_mean(clients, [2.0, 4.0, 2.0])["a"], weighted_mean(clients, [0.25, 0.5, 0.25])["a"]
    )


def test_float16_accumulates_in_float64() -> None:
    # float16 summation drifts; the float64 mean cast once to float16 does not
    clients = _clients(5, dtype="float16")
    got = weighted_mean(clients, [1.0] * 5)
    want = np.mean([c["a"].astype(np.float64) for c in clients], axis=0).astype(np.float16)
    assert got["a"].dtype == np.float16
    np.testing.assert_array_equal(got["a"], want)


def test_integer_arrays_are_rounded_back() -> None:
    got = weighted_mean([{"x": np.array([1, 2], np.int64)}, {"x": np.array([2, 5], np.int64)}], [1, 1])
    np.testing.assert_array_equal(got["x"], np.array([2, 4]))  # rint(1.5) = 2, rint(3.5) = 4
    assert got["x"].dtype == np.int64


@pytest.mark.parametrize(
    ("clients", "weights", "match"),
    [
        ([], [], "at least one"),
        ([{"x": np.zeros(2)}, {"y": np.zeros(2)}], [1, 1], "keys"),
        ([{"x": np.zeros(2)}, {"x": np.zeros(3)}], [1, 1], "client 1"),
        ([{"x": np.zeros(2)}, {"x": np.zeros(2, np.float32)}], [1, 1], "float32"),
        ([{"x": np.zeros(2)}], [1, 1], "2 weights for 1"),
        ([{"x": np.zeros(2)}], [-1], "non-negative"),
        ([{"x": np.zeros(2)}], [0], "not all zero"),
    ],
)
def test_weighted_mean_rejects_bad_input(clients, weights, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        weighted_mean(clients, weights)


def test_aggregation_weights_rejects_non_positive_counts() -> None:
    with pytest.raises(ValueError, match="positive"):
        aggregation_weights([3, 0], weighted=True)
    np.testing.assert_allclose(aggregation_weights([3, 0], weighted=False), [0.5, 0.5])


# --- FedIT deviation / FedEx residual ----------------------------------------------------------
M, N, R = 7, 5, 2  # non-square on purpose
PAIR = {"q": LoraPair("q.A", "q.B", scale=2.0)}


def _factors(k: int, seed: int = 7) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    a = [rng.standard_normal((R, N)) for _ in range(k)]  # each (r, n)
    b = [rng.standard_normal((M, R)) for _ in range(k)]  # each (m, r)
    return a, b


def _as_clients(a: list[np.ndarray], b: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    return [{"q.A": a_i, "q.B": b_i} for a_i, b_i in zip(a, b, strict=True)]


def _hand_residual(a: list[np.ndarray], b: list[np.ndarray], p: np.ndarray) -> np.ndarray:
    ideal = np.zeros((M, N))
    for p_i, a_i, b_i in zip(p, a, b, strict=True):
        ideal += p_i * (b_i @ a_i)
    a_bar = sum(p_i * a_i for p_i, a_i in zip(p, a, strict=True))
    b_bar = sum(p_i * b_i for p_i, b_i in zip(p, b, strict=True))
    return ideal - b_bar @ a_bar


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("weighted", [True, False])
def test_deviation_equals_hand_computed_residual_norm(k: int, weighted: bool) -> None:
    a, b = _factors(k)
    p = aggregation_weights([5, 1, 9, 2, 3][:k], weighted)
    s = PAIR["q"].scale
    residual = _hand_residual(a, b, p)
    ideal = sum(p_i * (b_i @ a_i) for p_i, a_i, b_i in zip(p, a, b, strict=True))
    want = np.linalg.norm(s * residual) / np.linalg.norm(s * ideal)

    got = lora_deviation(_as_clients(a, b), p, PAIR)

    assert got["q"] > 0
    assert got["q"] == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(lora_residual(a, b, p), residual, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_residual_rank_is_at_most_k_minus_1_times_r(k: int) -> None:
    rng = np.random.default_rng(3)
    m = n = 20  # big enough that (K-1)·r < min(m, n)
    a = [rng.standard_normal((R, n)) for _ in range(k)]
    b = [rng.standard_normal((m, R)) for _ in range(k)]
    residual = lora_residual(a, b, np.full(k, 1 / k))
    assert np.linalg.matrix_rank(residual) == (k - 1) * R  # generic factors reach the bound
    assert np.linalg.matrix_rank(residual) <= (k - 1) * R


def test_deviation_is_zero_with_shared_a_shared_b_or_one_client() -> None:
    a, b = _factors(4)
    p = aggregation_weights([1, 2, 3, 4], True)
    shared_a = lora_deviation(_as_clients([a[0]] * 4, b), p, PAIR)["q"]
    shared_b = lora_deviation(_as_clients(a, [b[0]] * 4), p, PAIR)["q"]
    single = lora_deviation(_as_clients(a[:1], b[:1]), [1.0], PAIR)["q"]
    assert shared_a < 1e-14
    assert shared_b < 1e-14
    assert single == 0.0
    assert np.abs(lora_residual([a[0]] * 4, b, p)).max() < 1e-14


def test_deviation_zero_over_zero_is_zero_and_scale_cancels() -> None:
    a, b = _factors(3)
    zeros_b = [np.zeros_like(x) for x in b]  # PEFT init: B = 0
    p = np.full(3, 1 / 3)
    assert lora_deviation(_as_clients(a, zeros_b), p, PAIR)["q"] == 0.0
    scaled = {"q": LoraPair("q.A", "q.B", scale=-11.0)}
    assert lora_deviation(_as_clients(a, b), p, scaled)["q"] == pytest.approx(
        lora_deviation(_as_clients(a, b), p, PAIR)["q"], rel=1e-12
    )
    zero_scale = {"q": LoraPair("q.A", "q.B", scale=0.0)}
    assert lora_deviation(_as_clients(a, b), p, zero_scale)["q"] == 0.0


def test_deviation_degenerate_cases() -> None:
    a1 = np.arange(1.0, 1.0 + R * N).reshape(R, N)
    b1 = np.arange(1.0, 1.0 + M * R).reshape(M, R)
    # shared A with B_2 = -B_1: B̄ = 0 and Σ p_i B_i A_i = 0, the residual factor A_i - Ā is 0
    assert lora_deviation(_as_clients([a1, a1], [b1, -b1]), [0.5, 0.5], PAIR)["q"] == 0.0
    # B_2 A_2 = -B_1 A_1 with A_2 = G A_1, B_2 = -B_1 G⁻¹: the ideal update cancels, B̄ Ā does not
    g = np.array([[2.0, 1.0], [0.0, 1.0]])
    a2, b2 = g @ a1, -b1 @ np.linalg.inv(g)
    got = lora_deviation(_as_clients([a1, a2], [b1, b2]), [0.5, 0.5], PAIR)["q"]
    assert got > 1e6  # ratio against a round-off-sized denominator (or inf)
