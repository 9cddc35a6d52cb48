"""FFA-LoRA and FLoRA maths (strategies.maths.shared_factor / .stacking)."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.maths.residual import fedex_aggregate
from strategies.maths.shared_factor import FrozenFactorMismatch, check_frozen_a, ffa_aggregate
from strategies.maths.stacking import flora_delta, flora_stack
from strategies.maths.transport import fold_into_base
from tests.strategies.maths.cases import (
    CLIENTS,
    PRECISIONS,
    SHAPES,
    assert_close,
    ideal_update,
    make_case,
)

SCALE = 2.0


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
def test_ffa_averaging_b_is_exact(
    k: int, shape: tuple[int, int], weighted: bool, dtype: type, rtol: float
) -> None:
    # Σ p_i s·B_i A == s·(Σ p_i B_i) A when A is frozen and shared
    case = make_case(k, shape, weighted, dtype, seed=k)
    a = case.a[0]  # (r, n), the frozen global A
    replies_a = [a.copy() for _ in range(k)]  # bit-identical copies of the frozen A
    b_bar = ffa_aggregate(case.b, case.p, a_list=replies_a, global_a=a, dtype=dtype)
    assert b_bar.shape == (shape[0], case.r) and b_bar.dtype == np.dtype(dtype)
    want = sum(p * SCALE * b.astype(np.float64) @ a for p, b in zip(case.p, case.b, strict=True))
    assert_close(SCALE * b_bar.astype(np.float64) @ a, want, rtol)


def test_ffa_rejects_an_a_that_moved_by_one_ulp() -> None:
    case = make_case(3, (48, 32), weighted=True, dtype=np.float32)
    a = case.a[0]
    moved = a.copy()
    moved[1, 2] = np.nextafter(moved[1, 2], np.float32(np.inf))
    replies_a = [a, a.copy(), moved]
    with pytest.raises(FrozenFactorMismatch, match=r"client 2: 1 of 128 entries differ") as info:
        ffa_aggregate(case.b, case.p, a_list=replies_a, global_a=a, module="layers.0.q_proj")
    message = str(info.value)
    assert "layers.0.q_proj" in message and "bit-identical" in message and "client 0" not in message
    assert isinstance(info.value, ValueError)


def test_ffa_rejects_dtype_shape_and_sign_of_zero_differences() -> None:
    a = np.zeros((4, 32), dtype=np.float32)
    with pytest.raises(FrozenFactorMismatch, match="float64"):
        check_frozen_a([a.astype(np.float64)], a)  # equal values, different bits
    with pytest.raises(FrozenFactorMismatch, match=r"\(4, 31\)"):
        check_frozen_a([a[:, :31]], a)
    with pytest.raises(FrozenFactorMismatch, match="128 of 128"):
        check_frozen_a([-a], a)  # -0.0 is not bit-identical to 0.0
    check_frozen_a([a.copy(), np.asfortranarray(a)], a)  # memory layout does not matter
    with pytest.raises(ValueError, match="both"):
        ffa_aggregate([np.zeros((4, 4))], [1.0], a_list=[a])


@pytest.mark.parametrize("k", CLIENTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("weight_on", ["a", "b"])
@pytest.mark.parametrize(("dtype", "rtol"), PRECISIONS)
def test_flora_stack_is_exact(
    k: int, shape: tuple[int, int], weighted: bool, weight_on: str, dtype: type, rtol: float
) -> None:
    case = make_case(k, shape, weighted, dtype, seed=20 + k)
    b_stack, a_stack = flora_stack(case.a, case.b, case.p, SCALE, weight_on=weight_on, dtype=dtype)
    assert b_stack.shape == (shape[0], k * case.r) and a_stack.shape == (k * case.r, shape[1])
    assert b_stack.dtype == a_stack.dtype == np.dtype(dtype)
    assert_close(flora_delta(b_stack, a_stack), SCALE * ideal_update(case), rtol)
    blocks = b_stack if weight_on == "a" else a_stack.T  # the unweighted factor is the raw one
    raw = case.b[0] if weight_on == "a" else case.a[0].T
    np.testing.assert_array_equal(blocks[:, : case.r], raw)


@pytest.mark.parametrize("weight_on", ["a", "b"])
def test_flora_mixed_ranks_with_per_client_scales(weight_on: str) -> None:
    # ranks 2, 4, 8 with s_i = α/r_i: the stack carries each client's own scale
    rng = np.random.default_rng(0)
    m, n, alpha = 48, 32, 16.0
    ranks = [2, 4, 8]
    a = [rng.standard_normal((r, n)) for r in ranks]
    b = [rng.standard_normal((m, r)) for r in ranks]
    p = np.array([0.2, 0.3, 0.5])
    scales = [alpha / r for r in ranks]
    b_stack, a_stack = flora_stack(a, b, p, scales, weight_on=weight_on)
    assert b_stack.shape == (m, sum(ranks)) and a_stack.shape == (sum(ranks), n)
    want = sum(p_i * s_i * b_i @ a_i for p_i, s_i, a_i, b_i in zip(p, scales, a, b, strict=True))
    np.testing.assert_allclose(flora_delta(b_stack, a_stack), want, rtol=0, atol=1e-12)
    # negative control: a rank-Σr_i PEFT adapter would apply α/Σr_i instead of each α/r_i
    naive_stack = flora_stack(a, b, p, 1.0, weight_on=weight_on)
    assert np.abs(alpha / sum(ranks) * flora_delta(*naive_stack) - want).max() > 1e-2
    # a zero-weight client is left out of the stack
    b0, a0 = flora_stack(a, b, [0.5, 0.0, 0.5], scales)
    assert b0.shape[1] == 2 + 8


def test_one_flora_round_equals_one_fedex_round() -> None:
    # docs/algorithms.md §6: after one round both give W0 + s·mean(B_i A_i)
    case = make_case(5, (48, 32), weighted=True, seed=3)
    w0 = np.random.default_rng(1).standard_normal((48, 32))
    flora_w = fold_into_base(w0, flora_delta(*flora_stack(case.a, case.b, case.p, SCALE)), False)
    agg = fedex_aggregate(case.a, case.b, case.p, SCALE)
    fedex_w = fold_into_base(w0, agg.residual, False) + SCALE * agg.b_bar @ agg.a_bar
    np.testing.assert_allclose(flora_w, fedex_w, rtol=0, atol=1e-12)


def test_flora_rejects_bad_inputs() -> None:
    a, b = [np.zeros((4, 32))], [np.zeros((48, 4))]
    with pytest.raises(ValueError, match="weight_on"):
        flora_stack(a, b, [1.0], 1.0, weight_on="c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scales"):
        flora_stack(a, b, [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="client 1"):
        flora_stack(a + [np.zeros((4, 31))], b + [np.zeros((48, 4))], [0.5, 0.5], 1.0)
