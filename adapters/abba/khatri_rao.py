"""ABBA's update ``ΔW = s·(B1 A1) ⊙ (B2 A2)`` without forming an ``m × n`` matrix (``docs/algorithms.md §10.1``).

The row-wise (face-splitting) product of ``B1: (m, r1)`` and ``B2: (m, r2)`` and the column-wise
(Khatri–Rao) product of ``A1: (r1, n)`` and ``A2: (r2, n)``, flattened the same way (``(j, k)``
j-major, k-minor; ``docs/algorithms.md §10.1``), satisfy ``B* A* = (B1 A1) ⊙ (B2 A2)`` exactly (ABBA, arXiv
2505.14238, its efficient implementation). ``ΔW x = s·B*(A* x)`` then costs
``O(T·(m + n)·r1 r2)`` for T tokens instead of ``O(m n)``.
"""

from __future__ import annotations

import torch


def row_khatri_rao(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``B*[i, (j, k)] = B1[i, j]·B2[i, k]``; ``B1: (m, r1)``, ``B2: (m, r2)`` -> ``B*: (m, r1 r2)``."""
    return (b1[:, :, None] * b2[:, None, :]).reshape(b1.shape[0], b1.shape[1] * b2.shape[1])


def column_khatri_rao(a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    """``A*[(j, k), l] = A1[j, l]·A2[k, l]``; ``A1: (r1, n)``, ``A2: (r2, n)`` -> ``A*: (r1 r2, n)``."""
    return (a1[:, None, :] * a2[None, :, :]).reshape(a1.shape[0] * a2.shape[0], a1.shape[1])


def abba_delta_x(
    x: torch.Tensor, b1: torch.Tensor, a1: torch.Tensor, b2: torch.Tensor, a2: torch.Tensor, scale: float
) -> torch.Tensor:
    """``x ΔWᵀ`` through the Khatri–Rao factors; ``x: (..., n)`` -> ``(..., m)``.

    ``B*`` and ``A*`` are rebuilt on every call, through autograd (``docs/algorithms.md §10.1``: caching would break the
    gradients of the four factors).
    """
    a_star = column_khatri_rao(a1, a2)  # A*: (r1 r2, n)
    b_star = row_khatri_rao(b1, b2)  # B*: (m, r1 r2)
    return (x @ a_star.T) @ b_star.T * scale  # (..., r1 r2) -> (..., m)


def dense_delta(
    b1: torch.Tensor, a1: torch.Tensor, b2: torch.Tensor, a2: torch.Tensor, scale: float
) -> torch.Tensor:
    """The reference ``ΔW = s·(B1 A1) ⊙ (B2 A2)``, ``(m, n)`` (for merging and for tests)."""
    return scale * (b1 @ a1) * (b2 @ a2)
