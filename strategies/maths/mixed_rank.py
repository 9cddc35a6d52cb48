"""LoRA factors of different ranks: truncation, zero-padding and the mixed-rank aggregates (numpy only).

Client ``i`` trains ``A_i: (r_i, n)``, ``B_i: (m, r_i)`` with its own scale ``s_i = α/r_i``; its update
is ``ΔW_i = s_i B_i A_i``. All maths here is in *effective units*: a rank-``r`` adapter's component
``k`` contributes ``s_r b_k a_kᵀ``, so moving an adapter from rank ``R`` to rank ``r`` keeps a
component's contribution by multiplying its ``A`` row by ``s_R / s_r`` (``docs/algorithms.md §18.1``).

- :func:`truncate_pair` — the first ``r`` components of a rank-``R`` adapter at rank ``r`` (HetLoRA's and
  FlexLoRA's distribution; FLoRA's and FedEx-LoRA's per-client adapters).
- :func:`fedex_mixed` — FedEx-LoRA over mixed ranks: the shared leading ``r_min`` components averaged,
  the rest of ``Σ p_i ΔW_i`` exactly in the residual (``§18.3``).
- :func:`hetlora_aggregate` — HetLoRA's zero-padded, sparsity-weighted mean (arXiv 2401.06432 §3.2; ``§19``).
- :func:`flexlora_aggregate` — FlexLoRA's full-size mean and its truncated SVD (arXiv 2402.11505 §3; ``§20``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contract.ranks import truncate_pair as truncate_pair  # the client truncates too (HetLoRA's pruning)

from .averaging import normalise_weights
from .transport import ResidualTransport

Weights = Sequence[float] | np.ndarray


def _pairs(a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clients' factors in float64, checked to chain: ``A_i: (r_i, n)``, ``B_i: (m, r_i)``."""
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError(f"need K >= 1 (A, B) pairs, got {len(a_list)} A and {len(b_list)} B")
    a = [np.asarray(x, dtype=np.float64) for x in a_list]
    b = [np.asarray(x, dtype=np.float64) for x in b_list]
    m, n = b[0].shape[0], a[0].shape[1]
    for i, (a_i, b_i) in enumerate(zip(a, b, strict=True)):
        if a_i.ndim != 2 or b_i.ndim != 2 or a_i.shape[0] != b_i.shape[1] or (b_i.shape[0], a_i.shape[1]) != (m, n):
            raise ValueError(f"client {i}: need A (r_i, {n}) and B ({m}, r_i), got A {a_i.shape}, B {b_i.shape}")
    return a, b


def mean_update_factors(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: Weights, scales: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``U = [B_1 … B_K]: (m, Σ r_i)``, ``V = [p_1 s_1 A_1; …]: (Σ r_i, n)`` with ``U V = Σ p_i ΔW_i`` (float64)."""
    a, b = _pairs(a_list, b_list)
    p = normalise_weights(weights, len(a))  # (K,)
    u = np.concatenate(b, axis=1)  # (m, Σ r_i)
    v = np.concatenate([p_i * s_i * a_i for p_i, s_i, a_i in zip(p, scales, a, strict=True)], axis=0)  # (Σ r_i, n)
    return u, v


def thin_svd(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of ``U V`` (``U: (m, k)``, ``V: (k, n)``) without forming it: ``(L: (m, q), σ: (q,), Rᵀ: (q, n))``.

    ``U = Q_u R_u``, ``Vᵀ = Q_v R_v`` (reduced QR), ``R_u R_vᵀ = W Σ Zᵀ``, so ``U V = (Q_u W) Σ (Q_v Z)ᵀ``;
    ``q = min(m, n, k)``-ish, singular values descending. Cost ``O((m + n) k²)``.
    """
    qu, ru = np.linalg.qr(u)  # (m, ku), (ku, k)
    qv, rv = np.linalg.qr(v.T)  # (n, kv), (kv, k)
    w, s, zt = np.linalg.svd(ru @ rv.T, full_matrices=False)  # (ku, q), (q,), (q, kv)
    return qu @ w, s, (qv @ zt.T).T  # (m, q), (q,), (q, n)


@dataclass(frozen=True)
class MixedFedEx:
    """One module's FedEx-LoRA aggregate over mixed ranks.

    ``b_bar: (m, r_min)`` and ``a_eff: (r_min, n)`` (scale folded in: the adapter adds ``b_bar @ a_eff``);
    ``residual`` is ``Σ p_i ΔW_i − b_bar a_eff`` (``(m, n)``, exact factors or dense); ``rel`` its
    Frobenius norm over ``‖Σ p_i ΔW_i‖`` (0 when the mean is 0).
    """

    b_bar: np.ndarray
    a_eff: np.ndarray
    residual: ResidualTransport
    rel: float


def fedex_mixed(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: Weights, scales: Sequence[float], r_min: int
) -> MixedFedEx:
    """FedEx-LoRA with ranks ``r_i >= r_min``: average the leading ``r_min`` components, fold the rest.

    ``B̄ = Σ p_i B_i[:, :r_min]``, ``Ā_eff = Σ p_i s_i A_i[:r_min]``; the residual
    ``Σ p_i s_i B_i A_i − B̄ Ā_eff`` is sent as the exact factors ``[B_1 … B_K, B̄]`` ·
    ``[p_1 s_1 A_1; …; p_K s_K A_K; −Ā_eff]`` (``Σ r_i + r_min`` columns) or densely when smaller. With
    one rank for all this is FedEx-LoRA's aggregate (arXiv 2410.09432 §3) in another exact factoring.
    """
    a, b = _pairs(a_list, b_list)
    if any(a_i.shape[0] < r_min for a_i in a) or r_min < 1:
        raise ValueError(f"every client's rank must be >= r_min = {r_min}, got {[a_i.shape[0] for a_i in a]}")
    p = normalise_weights(weights, len(a))  # (K,)
    b_bar = sum(p_i * b_i[:, :r_min] for p_i, b_i in zip(p, b, strict=True))  # (m, r_min)
    a_eff = sum(p_i * s_i * a_i[:r_min] for p_i, s_i, a_i in zip(p, scales, a, strict=True))  # (r_min, n)
    u, v = mean_update_factors(a, b, p, scales)  # (m, Σ r_i), (Σ r_i, n)
    u_res = np.concatenate([u, np.asarray(b_bar)], axis=1)  # (m, Σ r_i + r_min)
    v_res = np.concatenate([v, -np.asarray(a_eff)], axis=0)  # (Σ r_i + r_min, n)
    mean_norm = float(np.linalg.norm(u @ v))  # ‖Σ p_i ΔW_i‖_F
    res_norm = float(np.linalg.norm(u_res @ v_res))  # ‖residual‖_F
    return MixedFedEx(np.asarray(b_bar), np.asarray(a_eff), ResidualTransport.from_factors(u_res, v_res),
                      res_norm / mean_norm if mean_norm > 0 else 0.0)


@dataclass(frozen=True)
class HetLoRAAggregate:
    """One module's HetLoRA aggregate at rank ``R``: ``b: (m, R)``, ``a_eff: (R, n)`` (the adapter adds
    ``b @ a_eff``), the sparsity weights ``p: (K,)``, and ``dev_rel`` = ``‖Σ p_i ΔW_i − b a_eff‖ / ‖Σ p_i ΔW_i‖``."""

    b: np.ndarray
    a_eff: np.ndarray
    weights: np.ndarray
    dev_rel: float


def sparsity_weights(a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], scales: Sequence[float]) -> np.ndarray:
    """HetLoRA's aggregation weights ``p_i = ‖ΔW_i‖_F / Σ_j ‖ΔW_j‖_F`` (arXiv 2401.06432 §3.2; uniform if all are 0)."""
    a, b = _pairs(a_list, b_list)
    norms = np.array([abs(s) * np.linalg.norm(b_i @ a_i) for s, a_i, b_i in zip(scales, a, b, strict=True)])  # (K,)
    if norms.sum() <= 0:
        return np.full(len(a), 1.0 / len(a))
    return norms / norms.sum()


def hetlora_aggregate(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: Weights, scales: Sequence[float], rank: int
) -> HetLoRAAggregate:
    """Zero-pad every client to ``rank`` (in effective units: ``s_i A_i``) and take the ``weights``-mean.

    ``B̄ = Σ p_i [B_i, 0]: (m, R)``, ``Ā_eff = Σ p_i [s_i A_i; 0]: (R, n)``. Not exact: ``B̄ Ā_eff`` differs
    from ``Σ p_i ΔW_i`` as FedIT's means do (``docs/algorithms.md §3``); the gap is ``dev_rel``.
    """
    a, b = _pairs(a_list, b_list)
    if any(a_i.shape[0] > rank for a_i in a):
        raise ValueError(f"a client's rank exceeds the global rank {rank}: {[a_i.shape[0] for a_i in a]}")
    p = normalise_weights(weights, len(a))  # (K,)
    m, n = b[0].shape[0], a[0].shape[1]
    b_bar, a_eff = np.zeros((m, rank)), np.zeros((rank, n))  # (m, R), (R, n)
    for p_i, s_i, a_i, b_i in zip(p, scales, a, b, strict=True):
        r_i = a_i.shape[0]
        b_bar[:, :r_i] += p_i * b_i  # zero-padded B_i: (m, R)
        a_eff[:r_i] += p_i * s_i * a_i  # zero-padded s_i A_i: (R, n)
    u, v = mean_update_factors(a, b, p, scales)
    exact = u @ v  # Σ p_i ΔW_i: (m, n)
    norm = float(np.linalg.norm(exact))
    dev = float(np.linalg.norm(exact - b_bar @ a_eff)) / norm if norm > 0 else 0.0
    return HetLoRAAggregate(b_bar, a_eff, p, dev)


@dataclass(frozen=True)
class FlexLoRAAggregate:
    """One module's FlexLoRA aggregate: the rank-``R`` truncated SVD of ``Σ p_i ΔW_i`` as ``b: (m, R)``,
    ``a_eff: (R, n)`` (``b a_eff`` = the truncation), and the singular values ``sigma`` of the full mean."""

    b: np.ndarray
    a_eff: np.ndarray
    sigma: np.ndarray

    def truncation_loss(self, rank: int) -> float:
        """``‖ΔW̄ − [ΔW̄]_rank‖_F / ‖ΔW̄‖_F`` (0 for a zero mean): what a rank-``rank`` client loses."""
        total = float(np.sum(self.sigma**2))
        return float(np.sqrt(np.sum(self.sigma[rank:] ** 2) / total)) if total > 0 else 0.0


def flexlora_aggregate(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: Weights, scales: Sequence[float], rank: int
) -> FlexLoRAAggregate:
    """``ΔW̄ = Σ p_i ΔW_i = L Σ Rᵀ`` (thin SVD, never an ``(m, n)`` array); the first ``rank`` components split
    as ``B = L_r √Σ_r``, ``A_eff = √Σ_r R_rᵀ``, zero columns where ``ΔW̄`` has fewer than ``rank`` components."""
    a, b = _pairs(a_list, b_list)
    u, v = mean_update_factors(a, b, weights, scales)  # (m, Σ r_i), (Σ r_i, n)
    left, sigma, right_t = thin_svd(u, v)  # (m, q), (q,), (q, n)
    k = min(rank, sigma.size)
    root = np.sqrt(sigma[:k])  # (k,)
    m, n = u.shape[0], v.shape[1]
    b_new, a_new = np.zeros((m, rank)), np.zeros((rank, n))
    b_new[:, :k] = left[:, :k] * root  # (m, k)
    a_new[:k] = root[:, None] * right_t[:k]  # (k, n)
    return FlexLoRAAggregate(b_new, a_new, sigma)
