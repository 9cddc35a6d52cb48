"""The exact ABBA residual: factor means plus the Hadamard-product residual folded into the base.

ABBA (arXiv:2505.14238; ``docs/algorithms.md §10.1``) adapts a module by ``ΔW = s·(B1 A1) ⊙ (B2 A2)`` with ``B1: (m, r1)``,
``A1: (r1, n)``, ``B2: (m, r2)``, ``A2: (r2, n)``. Averaging the four factors separately is even
less exact than FedIT (``docs/algorithms.md §10.3``). The FedEx-style fix keeps the factor means as the next adapter
and folds

    ΔW_res = Σ_i p_i s·(B1_i A1_i) ⊙ (B2_i A2_i) − s·(B̄1 Ā1) ⊙ (B̄2 Ā2)            (m, n)

into the frozen base, so ``W0 + ΔW_res + s·(B̄1Ā1)⊙(B̄2Ā2) == W0 + Σ p_i ΔW_i`` exactly.

Every ABBA update is a product of Khatri–Rao factors (``docs/algorithms.md §10.1``): ``(B1A1) ⊙ (B2A2) = B* A*`` with the
row-wise product ``B*[i, (j,k)] = B1[i,j]·B2[i,k]: (m, r1 r2)`` and the column-wise product
``A*[(j,k), l] = A1[j,l]·A2[k,l]: (r1 r2, n)``, both j-major, k-minor. So the residual has the exact
stacked factors ``U = [B*_1 … B*_K, B̄*]: (m, (K+1) r1 r2)``, ``V = s·[p_1 A*_1; …; p_K A*_K; −Ā*]``,
and travels factored when ``(K+1)·r1 r2·(m + n) < m·n``, densely otherwise (``docs/algorithms.md §4.3``), through
the same :class:`~strategies.maths.transport.ResidualTransport` as FedEx-LoRA. Everything runs in
float64 unless asked otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .averaging import normalise_weights
from .numerics import FloatDtype, Weights, compute_dtype, weighted_sum
from .transport import ResidualTransport


class AbbaFactors(NamedTuple):
    """One client's ABBA factors for one module: ``B1 (m, r1), A1 (r1, n), B2 (m, r2), A2 (r2, n)``."""

    b1: np.ndarray
    a1: np.ndarray
    b2: np.ndarray
    a2: np.ndarray


def khatri_rao_rows(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Row-wise (face-splitting) product ``B*: (m, r1 r2)``, column ``(j, k)`` at ``j·r2 + k``."""
    m, r1 = b1.shape
    return (b1[:, :, None] * b2[:, None, :]).reshape(m, r1 * b2.shape[1])  # (m, r1, r2) -> (m, r1 r2)


def khatri_rao_cols(a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """Column-wise product ``A*: (r1 r2, n)``, row ``(j, k)`` at ``j·r2 + k`` (matches the rows one)."""
    r1, n = a1.shape
    return (a1[:, None, :] * a2[None, :, :]).reshape(r1 * a2.shape[0], n)  # (r1, r2, n) -> (r1 r2, n)


def abba_update(f: AbbaFactors, scale: float, *, dtype: FloatDtype = np.float64) -> np.ndarray:
    """The dense definition ``s·(B1 A1) ⊙ (B2 A2): (m, n)`` (the reference for tests)."""
    dt = compute_dtype(dtype)
    b1, a1, b2, a2 = (np.asarray(x).astype(dt, copy=False) for x in f)
    return dt.type(scale) * ((b1 @ a1) * (b2 @ a2))  # (m, n) ⊙ (m, n)


def _check(factors: Sequence[AbbaFactors], dtype: FloatDtype) -> list[AbbaFactors]:
    if not factors:
        raise ValueError("ABBA aggregation needs at least one client")
    dt = compute_dtype(dtype)
    cast = [AbbaFactors(*(np.asarray(x).astype(dt, copy=False) for x in f)) for f in factors]
    b1, a1, b2, a2 = (x.shape for x in cast[0])
    if not (len(b1) == len(a1) == len(b2) == len(a2) == 2 and b1[1] == a1[0] and b2[1] == a2[0]
            and b1[0] == b2[0] and a1[1] == a2[1]):
        raise ValueError(f"client 0: expected B1 (m, r1), A1 (r1, n), B2 (m, r2), A2 (r2, n), got {b1}, {a1}, {b2}, {a2}")
    for i, f in enumerate(cast):
        if tuple(x.shape for x in f) != (b1, a1, b2, a2):
            raise ValueError(f"client {i}: ABBA factor shapes {[x.shape for x in f]} differ from client 0's")
    return cast


@dataclass(frozen=True)
class AbbaAggregate:
    """One module's exact ABBA aggregate: the factor means (next adapter) and ``ΔW_res`` for the base."""

    means: AbbaFactors
    residual: ResidualTransport


def abba_aggregate(
    factors: Sequence[AbbaFactors], weights: Weights, scale: float, *, dtype: FloatDtype = np.float64
) -> AbbaAggregate:
    """Factor means and the exact residual (stacked Khatri–Rao factors, or dense when smaller).

    Afterwards ``W0 + residual + s·(B̄1Ā1)⊙(B̄2Ā2) == W0 + Σ_i p_i s·(B1_i A1_i)⊙(B2_i A2_i)``.
    """
    cast = _check(factors, dtype)
    dt = compute_dtype(dtype)
    p = normalise_weights(weights, len(cast)).astype(dt)  # (K,)
    means = AbbaFactors(*(weighted_sum([f[j] for f in cast], p, dt) for j in range(4)))
    s = dt.type(scale)
    u = np.concatenate([*(khatri_rao_rows(f.b1, f.b2) for f in cast), khatri_rao_rows(means.b1, means.b2)], axis=1)
    v = np.concatenate(
        [*(s * p_i * khatri_rao_cols(f.a1, f.a2) for p_i, f in zip(p, cast, strict=True)),
         -s * khatri_rao_cols(means.a1, means.a2)],
        axis=0,
    )  # U: (m, (K+1) r1 r2), V: ((K+1) r1 r2, n)
    return AbbaAggregate(means, ResidualTransport.from_factors(u, v))
