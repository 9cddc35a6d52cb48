"""Fed-SB maths (strategies.maths.latent): ``docs/exactness.md §6``."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.comm import comm_params
from strategies.maths.latent import fedsb_aggregate, fedsb_delta, leading_block, pad_leading_block
from tests.strategies.maths.cases import CLIENTS, PRECISIONS, SAMPLE_COUNTS, SHAPES, assert_close

R = 4
SCALE = 1.0  # Fed-SB forces α = r (docs/algorithms.md §8.1)


def _frozen(shape: tuple[int, int], r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal ``B: (m, r)`` (columns) and ``A: (r, n)`` (rows), as LoRA-SB's SVD gives."""
    rng = np.random.default_rng(seed)
    m, n = shape
    b = np.linalg.qr(rng.standard_normal((m, r)))[0]  # (m, r)
    a = np.linalg.qr(rng.standard_normal((n, r)))[0].T  # (r, n)
    return b, a


def _weights(k: int, weighted: bool) -> np.ndarray:
    counts = np.asarray(SAMPLE_COUNTS[:k], dtype=np.float64)
    return counts / counts.sum() if weighted else np.full(k, 1.0 / k)


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
@pytest.mark.parametrize("scale", [SCALE, 0.5])
def test_latent_average_is_exact_fedavg(
    k: int, shape: tuple[int, int], weighted: bool, dtype: type, rtol: float, scale: float
) -> None:
    # docs/exactness.md §6: Σ p_i s·B R_i A == s·B (Σ p_i R_i) A
    # Prepare
    b, a = _frozen(shape, R)
    b, a = b.astype(dtype), a.astype(dtype)
    rng = np.random.default_rng(k)
    latents = [rng.standard_normal((R, R)).astype(dtype) for _ in range(k)]
    p = _weights(k, weighted)
    # Execute
    agg = fedsb_aggregate(latents, p, dtype=dtype)
    # Assert
    assert agg.shape == (R, R) and agg.dtype == np.dtype(dtype)
    want = sum(p_i * fedsb_delta(b, x, a, scale) for p_i, x in zip(p, latents, strict=True))
    assert_close(fedsb_delta(b, agg, a, scale), want, rtol)
    independent = sum(p_i * x.astype(np.float64) for p_i, x in zip(p, latents, strict=True))
    assert_close(agg, independent, rtol)


@pytest.mark.parametrize("k", [1, 2, 5, 25])
def test_payload_is_m_r_squared_for_any_k(k: int) -> None:
    # docs/exactness.md §6: upload and download hold exactly M·r² (+ head) values, independent of K
    shapes = {f"layers.{i}.{t}": s for i in range(3) for t, s in zip("qv", SHAPES, strict=True)}
    rng = np.random.default_rng(0)
    per_module = {
        name: fedsb_aggregate([rng.standard_normal((R, R)) for _ in range(k)], np.ones(k))
        for name in shapes
    }
    assert sum(x.size for x in per_module.values()) == len(shapes) * R * R
    cost = comm_params("fedsb", shapes, R, K=k, head=10)
    assert cost.upload == cost.download == len(shapes) * R * R + 10
    assert cost.one_time == R * sum(m + n for m, n in shapes.values())


def test_round_two_depends_only_on_round_two_replies() -> None:
    # docs/exactness.md §6: no stale accumulation (the reference's multi-round bug, docs/algorithms.md §9.1)
    round1 = [np.full((R, R), 1.0), np.full((R, R), 3.0)]
    round2 = [np.full((R, R), 10.0), np.full((R, R), 20.0)]
    g1 = fedsb_aggregate(round1, [0.5, 0.5])
    g2 = fedsb_aggregate(round2, [0.5, 0.5])
    np.testing.assert_array_equal(g1, np.full((R, R), 2.0))
    np.testing.assert_array_equal(g2, np.full((R, R), 15.0))
    buggy = fedsb_aggregate(round1 + round2, np.full(4, 0.25))  # what the reference computes
    assert not np.allclose(g2, buggy)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("r", [4, 8])
def test_orthonormal_frozen_factors_do_not_amplify(shape: tuple[int, int], r: int) -> None:
    # docs/exactness.md §6: ‖B ξ A‖_F == ‖ξ‖_F
    b, a = _frozen(shape, r, seed=r)
    xi = np.random.default_rng(3).standard_normal((r, r))
    assert np.linalg.norm(b @ xi @ a) == pytest.approx(np.linalg.norm(xi), rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("r_i", [1, 2, 3, 4])
def test_padded_latent_contributes_its_leading_block_exactly(
    shape: tuple[int, int], r_i: int
) -> None:
    # docs/exactness.md §6: s·B pad(R_i) A == s·B[:, :r_i] R_i A[:r_i, :]
    b, a = _frozen(shape, R, seed=11)
    x = np.random.default_rng(r_i).standard_normal((r_i, r_i))
    padded = pad_leading_block(x, R)
    assert padded.shape == (R, R)
    np.testing.assert_array_equal(padded[:r_i, :r_i], x)
    assert not padded[r_i:, :].any() and not padded[:, r_i:].any()
    want = SCALE * b[:, :r_i] @ x @ a[:r_i, :]
    np.testing.assert_allclose(fedsb_delta(b, padded, a, SCALE), want, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(leading_block(padded, r_i), x)


@pytest.mark.parametrize("weighted", [False, True])
def test_mixed_rank_aggregate_is_exact_average_of_applied_updates(weighted: bool) -> None:
    # docs/algorithms.md §9.4: rank-r_i clients use B[:, :r_i], A[:r_i, :]; the padded average is still exact
    b, a = _frozen((48, 32), 8, seed=5)
    ranks = [8, 2, 5, 8, 3]
    rng = np.random.default_rng(9)
    latents = [rng.standard_normal((r_i, r_i)) for r_i in ranks]
    p = _weights(len(ranks), weighted)
    agg = fedsb_aggregate(latents, p)
    assert agg.shape == (8, 8)
    applied = sum(
        p_i * SCALE * b[:, :r_i] @ x @ a[:r_i, :]
        for p_i, x, r_i in zip(p, latents, ranks, strict=True)
    )
    np.testing.assert_allclose(fedsb_delta(b, agg, a, SCALE), applied, rtol=0, atol=1e-13)
    # the global rank can exceed every client's
    assert fedsb_aggregate(latents[1:3], [0.5, 0.5], rank=8).shape == (8, 8)
    # negative control: padding into the wrong (trailing) block is not exact
    wrong = np.zeros((8, 8))
    wrong[-2:, -2:] = latents[1]
    right = SCALE * b[:, :2] @ latents[1] @ a[:2, :]
    assert np.abs(fedsb_delta(b, wrong, a, SCALE) - right).max() > 1e-3


def test_bad_latents_are_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        fedsb_aggregate([np.zeros((4, 3))], [1.0])
    with pytest.raises(ValueError, match="exceed the global rank"):
        fedsb_aggregate([np.zeros((5, 5))], [1.0], rank=4)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_leading_block(np.zeros((5, 5)), 4)
    with pytest.raises(ValueError, match="client rank"):
        leading_block(np.zeros((4, 4)), 5)
    with pytest.raises(ValueError, match="at least one"):
        fedsb_aggregate([], [])
