"""The FedEx-LoRA residual: factor means, the exact residual and its factored forms (numpy only).

FedEx-LoRA (Singhal et al., arXiv:2410.09432, §3; ``docs/algorithms.md §4``) keeps FedIT's factor means
``Ā = Σ p_i A_i``, ``B̄ = Σ p_i B_i`` as the next adapter and folds the residual

    s·ΔW_res = s·(Σ_i p_i B_i A_i − B̄ Ā)                                  (m, n)

into the frozen base, so that ``W0 + s·ΔW_res + s·B̄ Ā == W0 + s·Σ p_i B_i A_i`` exactly (``docs/algorithms.md §4``).

Precision: everything here runs in float64 by default (inputs are upcast); ``dtype=np.float32`` is
offered for speed (the minimum for exactness, ``docs/algorithms.md §1``). Results come back in the compute dtype; the
caller casts to float32 for the wire. In float32 prefer the pivot form: the stacked and naive paths
subtract two large products and lose about 3 digits when clients are close (see the benchmark).

Exact factored forms (``U V == s·ΔW_res``, the scale ``s`` folded into ``V``; clients with
``p_i = 0`` are left out of the last two):

- ``"stacked"``: ``U = [B_1 … B_K, B̄]: (m, (K+1)r)``, ``V = s·[p_1 A_1; …; p_K A_K; −Ā]``.
- ``"centred"``: ``U = [B_i − B̄]: (m, K r)``, ``V = s·[p_i (A_i − Ā)]`` — the weighted covariance
  form of ``docs/algorithms.md §3``.
- ``"pivot"`` (default): with ``j = argmax p``, ``U = [B_i − B_j]_{i≠j}: (m, (K−1) r)``,
  ``V = s·[p_i (A_i − Ā)]_{i≠j}``. It holds because ``Σ_i p_i (A_i − Ā) = 0``, so client ``j``'s
  block equals ``−Σ_{i≠j}`` of the others. ``(K−1) r`` columns meet the rank bound
  ``rank(ΔW_res) ≤ (K−1) r`` (``docs/algorithms.md §3``), so no exact generic factorisation is narrower; one client
  gives ``k = 0`` (an exactly-zero residual).

The centred and pivot forms compute the residual without the cancellation ``M̄ − B̄Ā`` of two large
products, so they are also the more accurate dense path when clients are close to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .averaging import normalise_weights
from .numerics import FloatDtype, Weights, compute_dtype, lora_factors, weighted_sum
from .transport import ResidualTransport

ResidualForm = Literal["stacked", "centred", "pivot"]
DenseMethod = Literal["naive", "stacked", "factored"]


def lora_residual(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Dense FedEx-LoRA residual ``ΔW_res = Σ p_i B_i A_i − B̄ Ā``, shape ``(m, n)``, float64.

    This is the error of FedIT's factor averaging (FedEx-LoRA, arXiv:2410.09432, §3; see
    ``docs/algorithms.md §3``). Zero when all clients share ``A`` or share ``B``; rank at most
    ``min((K−1)·r, m, n)``. It is *not* scaled by ``s`` and not transposed for ``fan_in_fan_out``.
    """
    p = normalise_weights(weights, len(a_list))
    a = [np.asarray(x, dtype=np.float64) for x in a_list]  # each (r, n)
    b = [np.asarray(x, dtype=np.float64) for x in b_list]  # each (m, r)
    a_bar = sum(p_i * a_i for p_i, a_i in zip(p, a, strict=True))  # (r, n)
    b_bar = sum(p_i * b_i for p_i, b_i in zip(p, b, strict=True))  # (m, r)
    mean_product = sum(p_i * (b_i @ a_i) for p_i, a_i, b_i in zip(p, a, b, strict=True))  # (m, n)
    return np.asarray(mean_product - b_bar @ a_bar)  # (m, n)


def factor_means(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    *,
    dtype: FloatDtype = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """FedIT's factor means ``(Ā: (r, n), B̄: (m, r))`` accumulated in ``dtype``."""
    a, b, _ = lora_factors(a_list, b_list, dtype)
    p = normalise_weights(weights, len(a))  # (K,)
    return weighted_sum(a, p, dtype), weighted_sum(b, p, dtype)  # (r, n), (m, r)


def mean_product(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    *,
    method: Literal["stacked", "naive"] = "stacked",
    dtype: FloatDtype = np.float64,
) -> np.ndarray:
    """The ideal update ``Σ_i p_i B_i A_i: (m, n)`` (without ``s``).

    ``"stacked"`` is one GEMM ``[B_1 … B_K] · [p_1 A_1; …; p_K A_K]`` with inner size ``K r``;
    ``"naive"`` sums K rank-r dense products (memory-bound: K passes over an ``(m, n)`` array).
    """
    a, b, (m, r, n) = lora_factors(a_list, b_list, dtype)
    p = normalise_weights(weights, len(a)).astype(compute_dtype(dtype))  # (K,)
    if method == "naive":
        acc = np.zeros((m, n), dtype=compute_dtype(dtype))  # (m, n)
        for p_i, a_i, b_i in zip(p, a, b, strict=True):
            acc += p_i * (b_i @ a_i)  # (m, r) @ (r, n)
        return acc
    if method != "stacked":
        raise ValueError(f"method must be 'stacked' or 'naive', got {method!r}")
    u = np.concatenate(b, axis=1)  # (m, K r)
    v = np.concatenate([p_i * a_i for p_i, a_i in zip(p, a, strict=True)], axis=0)  # (K r, n)
    return u @ v  # (m, n)


def residual_factors(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    scale: float,
    *,
    form: ResidualForm = "pivot",
    dtype: FloatDtype = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact factors ``U: (m, k)``, ``V: (k, n)`` with ``U @ V == s·ΔW_res`` (see the module doc).

    ``k`` is ``(K+1) r`` for ``"stacked"``, ``K' r`` for ``"centred"`` and ``(K'−1) r`` for
    ``"pivot"``, where ``K'`` counts the clients with ``p_i > 0`` (the others contribute nothing).
    """
    a, b, (m, r, n) = lora_factors(a_list, b_list, dtype)
    dt = compute_dtype(dtype)
    p = normalise_weights(weights, len(a)).astype(dt)  # (K,)
    a_bar, b_bar = weighted_sum(a, p, dt), weighted_sum(b, p, dt)  # (r, n), (m, r)
    s = dt.type(scale)
    if form == "stacked":
        u = np.concatenate([*b, b_bar], axis=1)  # (m, (K+1) r)
        v_blocks = [s * p_i * a_i for p_i, a_i in zip(p, a, strict=True)]  # each (r, n)
        return u, np.concatenate([*v_blocks, -s * a_bar], axis=0)  # ((K+1) r, n)
    live = [i for i in range(len(a)) if p[i] > 0]
    if form == "centred":
        keep, b_ref = live, b_bar  # b_ref: (m, r)
    elif form == "pivot":
        j = int(np.argmax(p))
        keep, b_ref = [i for i in live if i != j], b[j]  # b_ref: (m, r)
    else:
        raise ValueError(f"form must be 'stacked', 'centred' or 'pivot', got {form!r}")
    u = np.empty((m, len(keep) * r), dtype=dt)  # (m, k)
    v = np.empty((len(keep) * r, n), dtype=dt)  # (k, n)
    for c, i in enumerate(keep):
        u[:, c * r : (c + 1) * r] = b[i] - b_ref  # (m, r)
        v[c * r : (c + 1) * r, :] = (s * p[i]) * (a[i] - a_bar)  # (r, n)
    return u, v


def fedex_residual(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    scale: float,
    *,
    method: DenseMethod = "factored",
    dtype: FloatDtype = np.float64,
) -> np.ndarray:
    """The dense folded amount ``s·ΔW_res: (m, n)`` in ``nn.Linear`` orientation.

    Parameters
    ----------
    method : {"factored", "stacked", "naive"} (default: "factored")
        ``"factored"``: one GEMM over the pivot factors (inner size ``(K−1) r``, no cancellation).
        ``"stacked"``: one GEMM over the stacked factors (inner size ``(K+1) r``).
        ``"naive"``: the definition, K dense products then ``− B̄Ā``, always in float64
        (:func:`lora_residual`); the reference for the other two.
    dtype : float32 or float64 (default: float64)
        Compute dtype of the GEMM paths.
    """
    if method == "naive":
        a, b, _ = lora_factors(a_list, b_list, np.float64)
        return scale * lora_residual(a, b, weights)  # (m, n)
    if method not in ("factored", "stacked"):
        raise ValueError(f"method must be 'factored', 'stacked' or 'naive', got {method!r}")
    form: ResidualForm = "pivot" if method == "factored" else "stacked"
    u, v = residual_factors(a_list, b_list, weights, scale, form=form, dtype=dtype)
    return u @ v  # (m, k) @ (k, n) -> (m, n)


def residual_transport(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    scale: float,
    *,
    form: ResidualForm = "pivot",
    dtype: FloatDtype = np.float64,
) -> ResidualTransport:
    """``s·ΔW_res`` as exact factors when ``k·(m + n) < m·n``, densely otherwise (``docs/algorithms.md §4.3``)."""
    u, v = residual_factors(a_list, b_list, weights, scale, form=form, dtype=dtype)
    return ResidualTransport.from_factors(u, v)


@dataclass(frozen=True)
class FedExAggregate:
    """One module's FedEx-LoRA aggregate.

    Attributes
    ----------
    a_bar : np.ndarray
        ``Ā: (r, n)``, the next global ``lora_A``.
    b_bar : np.ndarray
        ``B̄: (m, r)``, the next global ``lora_B``.
    residual : ResidualTransport
        ``s·ΔW_res`` in ``(m, n)`` orientation, to add to the base (via
        :func:`~strategies.maths.transport.fold_into_base` with the layer's ``fan_in_fan_out``).
    """

    a_bar: np.ndarray
    b_bar: np.ndarray
    residual: ResidualTransport


def fedex_aggregate(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    scale: float,
    *,
    form: ResidualForm = "pivot",
    dtype: FloatDtype = np.float64,
) -> FedExAggregate:
    """Everything the server computes for one module in one FedEx-LoRA round (``docs/algorithms.md §4.2``).

    Afterwards ``W0' + s·B̄ Ā == W0 + s·Σ p_i B_i A_i`` with ``W0' = W0 + residual``.
    """
    a_bar, b_bar = factor_means(a_list, b_list, weights, dtype=dtype)  # (r, n), (m, r)
    residual = residual_transport(a_list, b_list, weights, scale, form=form, dtype=dtype)
    return FedExAggregate(a_bar, b_bar, residual)
