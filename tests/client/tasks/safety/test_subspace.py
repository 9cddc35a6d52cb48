"""Linear-algebra invariants and planted ground truth of the safety-subspace maths (``docs/tasks.md §5``)."""

from __future__ import annotations

import numpy as np
import pytest

from client.tasks.safety.subspace import (
    Factored,
    cosine,
    energy_basis,
    energy_in,
    energy_rank,
    mso,
    mso_baseline,
    principal_cosines,
    project_left,
    rho_rank,
    svd_dense,
    svd_factored,
)

M, N, R = 48, 40, 5


def orthonormal(rng, d, k):
    return np.linalg.qr(rng.standard_normal((d, k)))[0]


def random_lora(rng, m=M, n=N, r=R):
    return Factored(rng.standard_normal((m, r)), rng.standard_normal((r, n)))


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def test_pythagoras_and_modes(rng):
    delta, basis = random_lora(rng), orthonormal(rng, M, 7)
    same, orth, opp = (Factored(project_left(basis, delta.left, mode), delta.right) for mode in ("same", "orth", "opp"))
    np.testing.assert_allclose(same.dense() + orth.dense(), delta.dense(), atol=1e-12)
    np.testing.assert_allclose(opp.dense(), -same.dense(), atol=1e-12)
    total = np.sum(delta.dense() ** 2)
    e_same, e_orth = np.sum(same.dense() ** 2) / total, np.sum(orth.dense() ** 2) / total
    assert e_same + e_orth == pytest.approx(1.0, abs=1e-12)
    assert energy_in(basis, svd_factored(delta)) / total == pytest.approx(e_same, abs=1e-12)


def test_projection_idempotent_and_rotation_invariant(rng):
    delta, basis = random_lora(rng), orthonormal(rng, M, 6)
    once = project_left(basis, delta.left, "same")
    np.testing.assert_allclose(project_left(basis, once, "same"), once, atol=1e-12)
    rotated = basis @ orthonormal(rng, 6, 6)
    np.testing.assert_allclose(project_left(rotated, delta.left, "same"), once, atol=1e-12)


def test_factored_equals_dense(rng):
    for _ in range(5):
        delta = random_lora(rng)
        fact, dense = svd_factored(delta), svd_dense(delta.dense())
        np.testing.assert_allclose(fact.s, dense.s, rtol=1e-5)
        np.testing.assert_allclose(fact.U @ fact.U.T, dense.U @ dense.U.T, atol=1e-8)
        np.testing.assert_allclose(fact.factored().dense(), delta.dense(), atol=1e-10)
        basis = orthonormal(rng, M, 4)
        assert energy_in(basis, fact) == pytest.approx(energy_in(basis, dense), rel=1e-9)
        other = svd_dense(random_lora(rng).dense())
        for eta in (0.5, 0.9):
            assert mso(energy_basis(fact, eta), energy_basis(other, eta)) == pytest.approx(
                mso(energy_basis(dense, eta), energy_basis(other, eta)), abs=1e-9)
    rank_deficient = Factored(np.c_[delta.left[:, :2], delta.left[:, :2]], rng.standard_normal((4, N)))
    assert svd_factored(rank_deficient).s.size == 2


def test_mso_bounds_and_special_cases(rng):
    q = orthonormal(rng, 30, 5)
    assert mso(q, q) == pytest.approx(1.0)
    assert mso(q, q @ orthonormal(rng, 5, 5)) == pytest.approx(1.0)
    full = orthonormal(rng, 30, 30)
    assert mso(full[:, :10], full[:, 10:20]) == pytest.approx(0.0, abs=1e-12)
    for _ in range(20):
        a, b = orthonormal(rng, 30, rng.integers(1, 10)), orthonormal(rng, 30, rng.integers(1, 10))
        assert 0 <= mso(a, b) <= 1 + 1e-12 and mso(a, b) == pytest.approx(mso(b, a))
        cosines = principal_cosines(a, b)
        assert np.all((cosines >= 0) & (cosines <= 1))
        # MSO is the mean cos² of the principal angles over the smaller subspace
        assert mso(a, b) == pytest.approx(np.sum(cosines**2) / min(a.shape[1], b.shape[1]))


@pytest.mark.parametrize(("k1", "k2", "d"), [(3, 3, 20), (2, 6, 24), (8, 1, 16)])
def test_random_subspaces_meet_the_closed_form_baseline(k1, k2, d):
    rng = np.random.default_rng(k1 * 100 + k2)
    draws = np.array([mso(orthonormal(rng, d, k1), orthonormal(rng, d, k2)) for _ in range(200)])
    error = draws.std(ddof=1) / np.sqrt(draws.size)
    assert abs(draws.mean() - mso_baseline(k1, k2, d)) < 3 * error


def test_energy_rank_monotone_and_full(rng):
    s = np.sort(rng.random(9))[::-1]
    ks = [energy_rank(s, eta) for eta in (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)]
    assert ks == sorted(ks) and ks[-1] == 9 and ks[0] == 1
    assert energy_rank(np.zeros(3), 0.9) == 0
    assert (rho_rank(0.01, 256, 128), rho_rank(0.25, 256, 256), rho_rank(1.0, 5, 9)) == (1, 64, 5)
    with pytest.raises(ValueError):
        energy_rank(s, 0.0)


def test_planted_energy(rng):
    """ΔA = Q0 S0 Rᵀ; ΔT = α Q0 X + β Q0⊥ Y: E = α²‖X‖² / (α²‖X‖² + β²‖Y‖²) exactly."""
    d, k, n = 40, 6, 30
    full = orthonormal(rng, d, d)
    q0, q0_perp = full[:, :k], full[:, k:]
    ref = svd_dense(q0 @ np.diag(np.arange(k, 0, -1.0)) @ orthonormal(rng, n, k).T)
    x, y = rng.standard_normal((k, n)), rng.standard_normal((d - k, n))
    for alpha, beta in ((1.0, 0.0), (0.0, 1.0), (0.7, 0.3), (2.0, 5.0)):
        delta = Factored(np.c_[alpha * q0, beta * q0_perp], np.r_[x, y])
        svd = svd_factored(delta)
        expected = alpha**2 * np.sum(x**2) / (alpha**2 * np.sum(x**2) + beta**2 * np.sum(y**2))
        assert energy_in(ref.U, svd) / svd.energy == pytest.approx(expected, abs=1e-6)


def test_cosine_by_hand_including_negative():
    a = Factored(np.array([[1.0], [0.0]]), np.array([[3.0, 4.0]]))  # [[3, 4], [0, 0]]
    b = Factored(np.array([[1.0], [0.0]]), np.array([[-3.0, 0.0]]))  # [[-3, 0], [0, 0]]
    assert cosine(a, b) == pytest.approx(-9 / (5 * 3))  # negative: the upstream formula gives NaN here
    assert cosine(a, a) == pytest.approx(1.0)
