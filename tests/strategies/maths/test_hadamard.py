"""Exact federated ABBA (``docs/algorithms.md §10.1``, §10.3): Khatri–Rao identity and the folded residual."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.maths.hadamard import AbbaFactors, abba_aggregate, abba_update, khatri_rao_cols, khatri_rao_rows


def clients(k: int, m: int, n: int, r1: int, r2: int, seed: int = 0) -> list[AbbaFactors]:
    rng = np.random.default_rng(seed)
    return [AbbaFactors(rng.standard_normal((m, r1)), rng.standard_normal((r1, n)),
                        rng.standard_normal((m, r2)), rng.standard_normal((r2, n))) for _ in range(k)]


@pytest.mark.parametrize(("m", "n", "r1", "r2"), [(12, 12, 3, 3), (20, 9, 2, 4), (7, 16, 5, 1)])
def test_khatri_rao_factors_give_the_hadamard_product(m: int, n: int, r1: int, r2: int) -> None:
    f = clients(1, m, n, r1, r2)[0]
    product = khatri_rao_rows(f.b1, f.b2) @ khatri_rao_cols(f.a1, f.a2)  # (m, r1 r2) @ (r1 r2, n)
    np.testing.assert_allclose(product, abba_update(f, 1.0), rtol=0, atol=1e-12)
    # a different flattening in one of the two factors breaks it (docs/algorithms.md §10.1: one (j, k) flattening for both)
    swapped = (f.a1[None, :, :] * f.a2[:, None, :]).reshape(r1 * r2, n)
    if r1 > 1 and r2 > 1:
        assert not np.allclose(khatri_rao_rows(f.b1, f.b2) @ swapped, abba_update(f, 1.0))


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize(("m", "n", "r1", "r2"), [(40, 40, 2, 2), (64, 24, 3, 2), (24, 64, 1, 4)])
@pytest.mark.parametrize("weighted", [False, True])
def test_folded_residual_makes_the_mean_adapter_exact(k: int, m: int, n: int, r1: int, r2: int, weighted: bool) -> None:
    factors = clients(k, m, n, r1, r2, seed=k)
    weights = np.arange(1, k + 1, dtype=float) if weighted else np.ones(k)
    p = weights / weights.sum()
    s = 1.7
    agg = abba_aggregate(factors, weights, s)
    ideal = sum(p_i * abba_update(f, s) for p_i, f in zip(p, factors, strict=True))  # (m, n)
    served = agg.residual.to_dense() + abba_update(agg.means, s)
    np.testing.assert_allclose(served, ideal, rtol=0, atol=1e-11 * np.abs(ideal).max())
    for j in range(4):  # the next adapter is the plain factor mean
        np.testing.assert_allclose(agg.means[j], sum(p_i * f[j] for p_i, f in zip(p, factors, strict=True)), atol=1e-14)
    naive_error = np.abs(abba_update(agg.means, s) - ideal).max()
    if k == 1:
        assert np.abs(agg.residual.to_dense()).max() <= 1e-12 * np.abs(ideal).max()
    else:
        assert naive_error > 1e-3 * np.abs(ideal).max()  # averaging the factors alone is not exact


def test_residual_travels_factored_only_when_that_is_smaller() -> None:
    small = abba_aggregate(clients(2, 256, 256, 2, 2), [1, 1], 1.0)  # (2+1)·4 = 12 columns of 512 < 65,536
    big = abba_aggregate(clients(5, 16, 16, 2, 2), [1] * 5, 1.0)  # 24 columns of 32 > 256
    assert small.residual.form == "factored" and small.residual.columns == 12
    assert big.residual.form == "dense"


def test_mismatched_factors_are_refused_with_their_shapes() -> None:
    good, odd = clients(1, 8, 8, 2, 2)[0], clients(1, 8, 8, 3, 2)[0]
    with pytest.raises(ValueError, match="differ from client 0"):
        abba_aggregate([good, odd], [1, 1], 1.0)
    with pytest.raises(ValueError, match="at least one client"):
        abba_aggregate([], [], 1.0)
