"""Mixed-rank maths against float64 definitions: truncation, FedEx-LoRA's exact residual over mixed ranks,
HetLoRA's zero-padding and FlexLoRA's truncated SVD (docs/algorithms.md §18-§20)."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.maths.mixed_rank import (
    fedex_mixed,
    flexlora_aggregate,
    hetlora_aggregate,
    sparsity_weights,
    thin_svd,
    truncate_pair,
)

M, N, ALPHA = 24, 18, 16.0
RANK_SETS = {1: [4], 2: [2, 8], 5: [2, 4, 8, 4, 2]}


def clients(ranks: list[int], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, list[float]]:
    rng = np.random.default_rng(seed)
    a = [rng.normal(size=(r, N)) for r in ranks]  # A_i: (r_i, n)
    b = [rng.normal(size=(M, r)) for r in ranks]  # B_i: (m, r_i)
    p = rng.uniform(0.5, 2.0, size=len(ranks))
    return a, b, p / p.sum(), [ALPHA / r for r in ranks]


def mean_update(a, b, p, s) -> np.ndarray:
    return sum(p_i * s_i * b_i @ a_i for p_i, s_i, a_i, b_i in zip(p, s, a, b, strict=True))  # (m, n)


def test_truncation_keeps_the_first_components_in_effective_units() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, N)), rng.normal(size=(M, 8))
    b[:, 6:] = 0.0  # two fresh components: B columns zero
    for r in (1, 3, 8):
        a_r, b_r = truncate_pair(a, b, r, ALPHA / 8, ALPHA / r)
        assert a_r.shape == (r, N) and b_r.shape == (M, r)
        np.testing.assert_allclose((ALPHA / r) * b_r @ a_r, (ALPHA / 8) * b[:, :r] @ a[:r], rtol=1e-12, atol=1e-12)
    a_8, _ = truncate_pair(a, b, 8, ALPHA / 8, ALPHA / 8)
    np.testing.assert_array_equal(a_8, a)
    a_7, _ = truncate_pair(a, b, 7, ALPHA / 8, ALPHA / 7)
    np.testing.assert_array_equal(a_7[6], a[6])  # over a zero B column: copied, not rescaled
    with pytest.raises(ValueError, match="truncate"):
        truncate_pair(a, b, 9, 1.0, 1.0)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_fedex_mixed_is_exact_for_any_ranks(k: int) -> None:
    ranks = RANK_SETS[k]
    a, b, p, s = clients(ranks, seed=k)
    agg = fedex_mixed(a, b, p, s, min(ranks))
    assert agg.b_bar.shape == (M, min(ranks)) and agg.a_eff.shape == (min(ranks), N)
    exact = mean_update(a, b, p, s)
    np.testing.assert_allclose(agg.b_bar @ agg.a_eff + agg.residual.to_dense(), exact, rtol=0, atol=1e-12 * np.abs(exact).max())
    res = np.linalg.norm(exact - agg.b_bar @ agg.a_eff) / np.linalg.norm(exact)
    assert agg.rel == pytest.approx(res, rel=1e-9)
    if k == 1:
        assert agg.rel < 1e-12  # one client: its own product, nothing to fold


def test_fedex_mixed_with_one_rank_keeps_fedit_means() -> None:
    a, b, p, s = clients([4, 4, 4], seed=3)
    agg = fedex_mixed(a, b, p, s, 4)
    np.testing.assert_allclose(agg.b_bar, sum(pi * bi for pi, bi in zip(p, b, strict=True)), atol=1e-14)
    np.testing.assert_allclose(agg.a_eff, s[0] * sum(pi * ai for pi, ai in zip(p, a, strict=True)), atol=1e-14)


def test_fedex_mixed_refuses_a_rank_below_r_min() -> None:
    a, b, p, s = clients([2, 4])
    with pytest.raises(ValueError, match="r_min"):
        fedex_mixed(a, b, p, s, 4)


def test_hetlora_pads_to_the_global_rank_and_weights_by_update_norm() -> None:
    ranks = [2, 4, 8]
    a, b, _, s = clients(ranks, seed=4)
    p = sparsity_weights(a, b, s)
    norms = np.array([np.linalg.norm(si * bi @ ai) for si, ai, bi in zip(s, a, b, strict=True)])
    np.testing.assert_allclose(p, norms / norms.sum(), rtol=1e-12)
    agg = hetlora_aggregate(a, b, p, s, 8)
    assert agg.b.shape == (M, 8) and agg.a_eff.shape == (8, N)
    # column k of B̄ averages only the clients that have component k (the others are zero-padded)
    np.testing.assert_allclose(agg.b[:, 4:], p[2] * b[2][:, 4:], atol=1e-14)
    np.testing.assert_allclose(agg.a_eff[:2], sum(pi * si * ai[:2] for pi, si, ai in zip(p, s, a, strict=True)), atol=1e-12)
    exact = mean_update(a, b, p, s)
    assert agg.dev_rel == pytest.approx(np.linalg.norm(exact - agg.b @ agg.a_eff) / np.linalg.norm(exact), rel=1e-9)
    assert agg.dev_rel > 0.05  # not exact: HetLoRA's deviation is real
    with pytest.raises(ValueError, match="exceeds"):
        hetlora_aggregate(a, b, p, s, 4)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_flexlora_is_the_truncated_svd_of_the_exact_mean(k: int) -> None:
    ranks = RANK_SETS[k]
    a, b, p, s = clients(ranks, seed=10 + k)
    exact = mean_update(a, b, p, s)
    u, sig, vt = np.linalg.svd(exact)
    for r in sorted(set(ranks)):
        agg = flexlora_aggregate(a, b, p, s, r)
        assert agg.b.shape == (M, r) and agg.a_eff.shape == (r, N)
        best = (u[:, :r] * sig[:r]) @ vt[:r]  # Eckart-Young: the best rank-r approximation
        np.testing.assert_allclose(agg.b @ agg.a_eff, best, rtol=0, atol=1e-10 * sig[0])
        loss = np.linalg.norm(exact - best) / np.linalg.norm(exact)
        assert agg.truncation_loss(r) == pytest.approx(loss, rel=1e-9, abs=1e-12)
    full = flexlora_aggregate(a, b, p, s, sum(ranks))
    np.testing.assert_allclose(full.b @ full.a_eff, exact, rtol=0, atol=1e-10 * sig[0])  # exact before truncation
    assert full.truncation_loss(sum(ranks)) < 1e-9


def test_thin_svd_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    u, v = rng.normal(size=(M, 30)), rng.normal(size=(30, N))  # k > n: more columns than the product's rank
    left, sig, right_t = thin_svd(u, v)
    np.testing.assert_allclose(sig, np.linalg.svd(u @ v, compute_uv=False)[: sig.size], rtol=1e-10)
    np.testing.assert_allclose((left * sig) @ right_t, u @ v, atol=1e-10 * sig[0])
