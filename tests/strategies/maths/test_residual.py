"""FedEx-LoRA maths (strategies.maths.residual / .transport): ``docs/exactness.md §2``, §3."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.maths.residual import (
    factor_means,
    fedex_aggregate,
    fedex_residual,
    lora_residual,
    mean_product,
    residual_factors,
    residual_transport,
)
from strategies.maths.transport import ResidualTransport, fold_into_base, to_stored
from tests.strategies.maths.cases import (
    Case,
    CLIENTS,
    PRECISIONS,
    SHAPES,
    assert_close,
    ideal_update,
    make_case,
    means,
)

SCALE = 2.0  # α/r = 8/4, the FedEx-LoRA paper's GLUE setup (r = 4, α = 8)
FORMS = ["stacked", "centred", "pivot"]


def _reference_residual(case: Case) -> np.ndarray:
    """``s·(Σ p_i B_i A_i − B̄Ā)`` by explicit float64 loops."""
    a_bar, b_bar = means(case)
    return SCALE * (ideal_update(case) - b_bar @ a_bar)


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
def test_folded_base_plus_mean_factors_equals_ideal(
    k: int, shape: tuple[int, int], weighted: bool, dtype: type, rtol: float
) -> None:
    # docs/exactness.md §2: W0' + s·B̄Ā == W0 + s·Σ p_i B_i A_i, and the same on a batch of inputs
    # Prepare
    case = make_case(k, shape, weighted, dtype, seed=k)
    w0 = np.random.default_rng(99).standard_normal(shape).astype(dtype)  # (m, n)
    # Execute
    agg = fedex_aggregate(case.a, case.b, case.p, SCALE, dtype=dtype)
    w0_new = fold_into_base(w0, agg.residual.astype(dtype), fan_in_fan_out=False)  # (m, n)
    # Assert
    assert w0_new.dtype == np.dtype(dtype)
    assert agg.a_bar.dtype == agg.b_bar.dtype == np.dtype(dtype)
    got = w0_new.astype(np.float64) + SCALE * (agg.b_bar.astype(np.float64) @ agg.a_bar)  # (m, n)
    want = w0.astype(np.float64) + SCALE * ideal_update(case)  # (m, n)
    assert_close(got, want, rtol)
    x = np.random.default_rng(5).standard_normal((8, shape[1]))  # (batch, n)
    assert_close(x @ got.T, x @ want.T, rtol * 10)


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
def test_every_residual_method_matches_float64_reference(
    k: int, shape: tuple[int, int], weighted: bool, dtype: type, rtol: float
) -> None:
    case = make_case(k, shape, weighted, dtype, seed=10 + k)
    want = _reference_residual(case)
    tol = rtol * max(1.0, float(np.abs(SCALE * ideal_update(case)).max()))
    for method in ("naive", "stacked", "factored"):
        got = fedex_residual(case.a, case.b, case.p, SCALE, method=method, dtype=dtype)
        assert got.shape == shape
        np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=method)
    # the naive path *is* strategies.maths.residual.lora_residual, scaled
    np.testing.assert_array_equal(
        fedex_residual(case.a, case.b, case.p, SCALE, method="naive"),
        SCALE * lora_residual(case.a, case.b, case.p),
    )


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_covariance_identities_hold(k: int, shape: tuple[int, int], weighted: bool) -> None:
    # docs/algorithms.md §3: Σ p_i B_i A_i − B̄Ā == Σ p_i (B_i − B̄)(A_i − Ā) == Σ p_i B_i (A_i − Ā)
    case = make_case(k, shape, weighted, seed=20 + k)
    a_bar, b_bar = means(case)
    direct = ideal_update(case) - b_bar @ a_bar
    cov = sum(p * (b - b_bar) @ (a - a_bar) for p, a, b in zip(case.p, case.a, case.b, strict=True))
    one_sided = sum(p * b @ (a - a_bar) for p, a, b in zip(case.p, case.a, case.b, strict=True))
    np.testing.assert_allclose(cov, direct, rtol=0, atol=1e-14)
    np.testing.assert_allclose(one_sided, direct, rtol=0, atol=1e-14)


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("form", FORMS)
def test_factored_forms_reconstruct_dense_with_expected_width(
    k: int, shape: tuple[int, int], form: str
) -> None:
    # docs/exactness.md §2: the factored residual reconstructs the dense one
    case = make_case(k, shape, weighted=True, seed=30 + k)
    u, v = residual_factors(case.a, case.b, case.p, SCALE, form=form)
    width = {"stacked": (k + 1) * case.r, "centred": k * case.r, "pivot": (k - 1) * case.r}[form]
    assert u.shape == (shape[0], width)
    assert v.shape == (width, shape[1])
    np.testing.assert_allclose(u @ v, _reference_residual(case), rtol=0, atol=1e-13)


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_residual_rank_is_at_most_k_minus_one_times_r(k: int, shape: tuple[int, int]) -> None:
    # docs/exactness.md §2: rank(ΔW_res) ≤ min((K−1)r, m, n); generic random factors reach the bound
    case = make_case(k, shape, weighted=True, seed=40 + k)
    dense = fedex_residual(case.a, case.b, case.p, SCALE, method="naive")
    bound = min((k - 1) * case.r, *shape)
    tol = 1e-10 * max(float(np.abs(dense).max()), 1e-300)
    assert np.linalg.matrix_rank(dense, tol=tol) == bound
    # more clients than the matrix can hold: the bound saturates at min(m, n)
    many = make_case(12, shape, weighted=False, seed=41, r=4)
    dense_many = fedex_residual(many.a, many.b, many.p, SCALE)
    assert np.linalg.matrix_rank(dense_many) == min(11 * 4, *shape)


def test_zero_weight_clients_drop_out_of_the_factors() -> None:
    case = make_case(5, (48, 32), weighted=True, seed=45)
    p = case.p.copy()
    p[[1, 3]] = 0.0
    u, v = residual_factors(case.a, case.b, p, SCALE, form="pivot")
    assert u.shape[1] == (3 - 1) * case.r
    kept = [0, 2, 4]
    want = fedex_residual([case.a[i] for i in kept], [case.b[i] for i in kept], p[kept], SCALE)
    np.testing.assert_allclose(u @ v, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_residual_vanishes_for_shared_a_shared_b_or_one_client(shape: tuple[int, int]) -> None:
    # docs/exactness.md §2 (and why FFA-LoRA is exact, docs/algorithms.md §7)
    case = make_case(5, shape, weighted=True, seed=50)
    shared_a = [case.a[0]] * 5
    shared_b = [case.b[0]] * 5
    for a_list, b_list in ((shared_a, case.b), (case.a, shared_b)):
        for method in ("naive", "stacked", "factored"):
            res = fedex_residual(a_list, b_list, case.p, SCALE, method=method)
            assert np.abs(res).max() < 1e-14, method
    one = residual_transport(case.a[:1], case.b[:1], [1.0], SCALE)
    assert one.form == "factored" and one.columns == 0 and one.elements == 0
    np.testing.assert_array_equal(one.to_dense(), np.zeros(shape))
    # negative control: distinct A and B give a clearly non-zero residual
    assert np.abs(fedex_residual(case.a, case.b, case.p, SCALE)).max() > 1e-3


def test_wrong_residual_sign_breaks_the_identity() -> None:
    # negative control for docs/exactness.md §2
    case = make_case(5, (48, 32), weighted=True, seed=60)
    a_bar, b_bar = means(case)
    right = fedex_residual(case.a, case.b, case.p, SCALE)
    ideal = SCALE * ideal_update(case)
    assert_close(right + SCALE * b_bar @ a_bar, ideal, 1e-12)
    assert np.abs(-right + SCALE * b_bar @ a_bar - ideal).max() > 1e-3
    u, v = residual_factors(case.a, case.b, case.p, SCALE, form="stacked")
    r = case.r
    v_wrong = v.copy()
    v_wrong[-r:] *= -1  # +Ā instead of −Ā in the last block
    assert np.abs(u @ v_wrong - right).max() > 1e-3


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("weighted", [False, True])
def test_fedit_misses_the_ideal_by_exactly_the_residual(k: int, weighted: bool) -> None:
    # docs/exactness.md §2: (W0 + s·Σ p_i B_i A_i) − (W0 + s·B̄Ā) == s·ΔW_res
    case = make_case(k, (48, 32), weighted, seed=70 + k)
    w0 = np.random.default_rng(1).standard_normal((48, 32))
    a_bar, b_bar = factor_means(case.a, case.b, case.p)
    fedit = w0 + SCALE * b_bar @ a_bar
    ideal = w0 + SCALE * ideal_update(case)
    residual = fedex_residual(case.a, case.b, case.p, SCALE)
    np.testing.assert_allclose(ideal - fedit, residual, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [8.0, 16.0])
def test_rslora_scale_is_folded(shape: tuple[int, int], alpha: float) -> None:
    # docs/exactness.md §2: with rsLoRA the folded amount is (α/√r)·ΔW_res (not α/r)
    case = make_case(5, shape, weighted=False, seed=80)
    rs_scale = alpha / np.sqrt(case.r)
    raw = lora_residual(case.a, case.b, case.p)
    for form in FORMS:
        got = residual_transport(case.a, case.b, case.p, rs_scale, form=form).to_dense()
        np.testing.assert_allclose(got, rs_scale * raw, rtol=0, atol=1e-13 * alpha)
        assert np.abs(got - (alpha / case.r) * raw).max() > 1e-3  # α/r would be wrong


@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
def test_fan_in_fan_out_layers_get_the_transpose(dtype: type, rtol: float) -> None:
    # docs/exactness.md §3, non-square: Conv1D stores (n, m); a wrong orientation raises
    case = make_case(5, (48, 32), weighted=True, dtype=dtype, seed=90)
    residual = residual_transport(case.a, case.b, case.p, SCALE, dtype=dtype)
    w0_linear = np.random.default_rng(3).standard_normal((48, 32)).astype(dtype)  # (m, n)
    w0_conv = np.ascontiguousarray(w0_linear.T)  # (n, m)
    folded_linear = fold_into_base(w0_linear, residual, fan_in_fan_out=False)  # (m, n)
    folded_conv = fold_into_base(w0_conv, residual, fan_in_fan_out=True)  # (n, m)
    assert folded_conv.shape == (32, 48)
    np.testing.assert_array_equal(folded_conv, folded_linear.T)
    assert_close(folded_linear, w0_linear + _reference_residual(case), rtol)
    with pytest.raises(ValueError, match="fan_in_fan_out"):
        fold_into_base(w0_conv, residual, fan_in_fan_out=False)
    with pytest.raises(ValueError, match="fan_in_fan_out"):
        fold_into_base(w0_linear, residual, fan_in_fan_out=True)
    with pytest.raises(ValueError):  # what a plain un-transposed add would do
        _ = w0_conv + residual.to_dense(dtype)
    assert to_stored(residual.to_dense(), True).shape == (32, 48)


def test_square_fan_in_fan_out_compared_by_forward_outputs() -> None:
    # docs/exactness.md §3, square: shapes cannot catch a wrong transpose, forward outputs do
    case = make_case(5, (32, 32), weighted=True, seed=91)
    agg = fedex_aggregate(case.a, case.b, case.p, SCALE)
    w0 = np.random.default_rng(4).standard_normal((32, 32))  # nn.Linear orientation (m, n)
    conv_weight = w0.T.copy()  # Conv1D stores (n, m); y = x @ W + b
    x = np.random.default_rng(6).standard_normal((8, 32))  # (batch, n)
    ideal = x @ (w0 + SCALE * ideal_update(case)).T  # (batch, m)
    lora = SCALE * (x @ agg.a_bar.T) @ agg.b_bar.T  # (batch, m)
    right = x @ fold_into_base(conv_weight, agg.residual, fan_in_fan_out=True) + lora
    wrong = x @ fold_into_base(conv_weight, agg.residual, fan_in_fan_out=False) + lora
    np.testing.assert_allclose(right, ideal, rtol=0, atol=1e-12)
    assert np.abs(wrong - ideal).max() > 1e-4


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
def test_stacked_gemm_equals_sum_of_dense_products(
    k: int, shape: tuple[int, int], dtype: type, rtol: float
) -> None:
    case = make_case(k, shape, weighted=True, dtype=dtype, seed=100 + k)
    stacked = mean_product(case.a, case.b, case.p, method="stacked", dtype=dtype)
    naive = mean_product(case.a, case.b, case.p, method="naive", dtype=dtype)
    assert stacked.dtype == naive.dtype == np.dtype(dtype)
    assert_close(stacked, ideal_update(case), rtol)
    assert_close(naive, ideal_update(case), rtol)


@pytest.mark.parametrize(
    ("shape", "k", "form", "expected"),
    [
        ((48, 32), 2, "pivot", "factored"),  # 4·80 = 320 < 1536
        ((48, 32), 5, "pivot", "factored"),  # 16·80 = 1280 < 1536
        ((48, 32), 5, "stacked", "dense"),  # 24·80 = 1920 > 1536
        ((32, 32), 5, "pivot", "dense"),  # 16·64 = 1024 == 1024: a tie goes dense
        ((48, 32), 8, "pivot", "dense"),  # 28·80 = 2240 > 1536
    ],
)
def test_transport_picks_the_smaller_form(
    shape: tuple[int, int], k: int, form: str, expected: str
) -> None:
    # docs/algorithms.md §4.3: factored exactly when k·(m + n) < m·n
    case = make_case(k, shape, weighted=True, seed=110 + k)
    t = residual_transport(case.a, case.b, case.p, SCALE, form=form)
    m, n = shape
    columns = {"stacked": (k + 1) * case.r, "centred": k * case.r, "pivot": (k - 1) * case.r}[form]
    assert t.form == expected
    assert t.shape == shape
    assert t.elements == min(m * n, columns * (m + n)) if expected == "factored" else m * n
    assert t.elements == sum(a.size for a in t.arrays)
    np.testing.assert_allclose(t.to_dense(), _reference_residual(case), rtol=0, atol=1e-13)
    wire = t.astype(np.float32)
    assert all(a.dtype == np.float32 for a in wire.arrays) and wire.form == t.form


def test_transport_rejects_inconsistent_arrays_and_bad_inputs() -> None:
    with pytest.raises(ValueError):
        ResidualTransport("factored", (np.zeros((4, 2)), np.zeros((3, 5))), (4, 5))
    with pytest.raises(ValueError):
        ResidualTransport("dense", (np.zeros((4, 5)),), (5, 4))
    case = make_case(3, (48, 32), weighted=False)
    with pytest.raises(ValueError, match="client 1"):
        fedex_residual([case.a[0], case.a[1][:2], case.a[2]], case.b, case.p, SCALE)
    with pytest.raises(ValueError, match="float32 or float64"):
        fedex_residual(case.a, case.b, case.p, SCALE, dtype=np.float16)
    with pytest.raises(ValueError, match="3 clients"):
        fedex_residual(case.a, case.b, [0.5, 0.5], SCALE)
