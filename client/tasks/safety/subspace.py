"""Subspace maths of the safety-subspace analysis (arXiv 2505.14185; ``docs/tasks.md §5``).

Every update is kept in factored form ``Δ = left @ right`` (``left: (m, r)``, ``right: (r, n)``, r small),
as a LoRA update is. Its SVD comes from a QR of ``left`` and an SVD of the small ``r x n`` matrix
(``docs/tasks.md §5``): ``left = Q R``, ``R @ right = U_s Σ V_sᵀ``, so ``Δ = (Q U_s) Σ V_sᵀ``. That costs
``O((m + n) r²)`` per module; a dense ``m x n`` SVD is never formed.

Definitions (``docs/tasks.md §5``, with the upstream cosine bug fixed: the plain Frobenius cosine is used):

- ``rho_rank(ρ, m, n) = max(1, round(ρ·min(m, n)))``: the k of the reference top-k subspace.
- energy of Δ in the span of an orthonormal ``L``: ``‖L Lᵀ Δ‖²_F = ‖Lᵀ U Σ‖²_F``; its isotropic
  expectation for a uniformly random k-dim subspace of R^m is ``(k/m)·‖Δ‖²``.
- ``energy_rank(σ, η)``: the smallest k with ``Σ_{i≤k} σ_i² ≥ η·Σσ²``.
- ``mso(Q1, Q2) = ‖Q1ᵀQ2‖²_F / min(k1, k2)`` ∈ [0, 1] (mean cos² of the principal angles), with the
  closed-form random baseline ``max(k1, k2)/d`` (the paper's Experiment 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from adapters.low_rank import RANK_TOL, thin_svd_of_product

ProjectMode = Literal["same", "orth", "opp"]


@dataclass(frozen=True)
class Factored:
    """``Δ = left @ right``; ``left: (m, r)``, ``right: (r, n)``."""

    left: np.ndarray
    right: np.ndarray

    def __post_init__(self) -> None:
        if self.left.ndim != 2 or self.right.ndim != 2 or self.left.shape[1] != self.right.shape[0]:
            raise ValueError(f"factors {self.left.shape} @ {self.right.shape} do not chain")

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape[0], self.right.shape[1]

    def dense(self) -> np.ndarray:
        """The ``(m, n)`` matrix (tests and small references only)."""
        return self.left @ self.right


@dataclass(frozen=True)
class Svd:
    """A thin SVD ``U diag(s) Vh`` with ``U: (m, k)``, ``s: (k,)`` descending, ``Vh: (k, n)``."""

    U: np.ndarray
    s: np.ndarray
    Vh: np.ndarray

    @property
    def energy(self) -> float:
        """``‖Δ‖²_F = Σσ²``."""
        return float(np.sum(self.s**2))

    def factored(self) -> Factored:
        return Factored(self.U * self.s, self.Vh)


def svd_factored(delta: Factored, *, tol: float = RANK_TOL) -> Svd:
    """Thin SVD of ``left @ right`` via QR + a small SVD (module docstring); numerical zeros dropped."""
    return Svd(*thin_svd_of_product(delta.left, delta.right, tol=tol))


def svd_dense(matrix: np.ndarray, *, max_rank: int | None = None, tol: float = RANK_TOL) -> Svd:
    """Thin SVD of a dense matrix (references built once at start, never per-round updates)."""
    u, s, vh = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    keep = s > tol * s[0] if s.size and s[0] > 0 else np.zeros(s.shape, dtype=bool)
    k = int(keep.sum()) if max_rank is None else min(int(keep.sum()), max_rank)
    return Svd(u[:, :k], s[:k], vh[:k])


def rho_rank(rho: float, m: int, n: int) -> int:
    """``max(1, round(ρ·min(m, n)))`` (the paper's Experiment 1)."""
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    return max(1, int(round(rho * min(m, n))))


def energy_rank(s: np.ndarray, eta: float) -> int:
    """Smallest k with ``Σ_{i≤k} σ_i² ≥ η·Σσ²`` (0 for a zero update); ``energy_rank(s, 1) = rank``."""
    if not 0 < eta <= 1:
        raise ValueError(f"eta must be in (0, 1], got {eta}")
    energy = np.cumsum(np.asarray(s, dtype=np.float64) ** 2)
    if energy.size == 0 or energy[-1] <= 0:
        return 0
    # a relative slack keeps η = 1 at the full rank despite rounding in the cumulative sum
    return int(min(np.searchsorted(energy, eta * energy[-1] * (1 - 1e-12)) + 1, energy.size))


def energy_basis(svd: Svd, eta: float) -> np.ndarray:
    """The first ``energy_rank(σ, η)`` left singular vectors, ``(m, k)``."""
    return svd.U[:, : energy_rank(svd.s, eta)]


def energy_in(basis: np.ndarray, svd: Svd) -> float:
    """``‖L Lᵀ Δ‖²_F`` for an orthonormal ``basis`` L ``(m, k)``: ``‖Lᵀ U Σ‖²`` (k x r, cheap)."""
    return float(np.sum((basis.T @ svd.U * svd.s) ** 2))


def project_left(basis: np.ndarray, left: np.ndarray, mode: ProjectMode) -> np.ndarray:
    """The left factor of ``P Δ`` for ``P`` = ``L Lᵀ`` (same), ``I - L Lᵀ`` (orth) or ``-L Lᵀ`` (opp)."""
    inside = basis @ (basis.T @ left)  # (m, r)
    if mode == "same":
        return inside
    if mode == "orth":
        return left - inside
    if mode == "opp":
        return -inside
    raise ValueError(f"`safety.project` = {mode!r}: use `none`, `same`, `orth` or `opp`")


def inner(a: Factored, b: Factored) -> float:
    """Frobenius ``⟨A, B⟩ = Σ (L_aᵀ L_b) ⊙ (R_a R_bᵀ)``, never forming either matrix."""
    return float(np.sum((a.left.T @ b.left) * (a.right @ b.right.T)))


def cosine(a: Factored, b: Factored) -> float:
    """Plain Frobenius cosine ``⟨A, B⟩ / (‖A‖‖B‖)`` (NaN if either is zero)."""
    norms = inner(a, a) * inner(b, b)
    return inner(a, b) / float(np.sqrt(norms)) if norms > 0 else float("nan")


def mso(q1: np.ndarray, q2: np.ndarray) -> float:
    """Mode subspace overlap ``‖Q1ᵀQ2‖²_F / min(k1, k2)`` of orthonormal bases (NaN if one is empty)."""
    k = min(q1.shape[1], q2.shape[1])
    return float(np.sum((q1.T @ q2) ** 2) / k) if k else float("nan")


def mso_baseline(k1: int, k2: int, d: int) -> float:
    """Expected MSO of independent Haar-random subspaces of dims k1, k2 in R^d: ``max(k1, k2)/d``."""
    return max(k1, k2) / d


def principal_cosines(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between two subspaces (singular values of ``Q1ᵀQ2``), descending."""
    if not q1.shape[1] or not q2.shape[1]:
        return np.zeros(0)
    return np.clip(np.linalg.svd(q1.T @ q2, compute_uv=False), 0.0, 1.0)
