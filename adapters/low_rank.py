"""The thin SVD of a factored matrix ``left @ right`` without forming it (numpy, float64).

``left = Q R`` (QR), ``R @ right = U_s Σ V_sᵀ`` (a small SVD), so ``left @ right = (Q U_s) Σ V_sᵀ`` at
``O((m + n) k²)`` for ``left: (m, k)``, ``right: (k, n)``. Used to bring an adapter update back to its
rank (``adapters.plain_lora``) and by the safety-subspace analysis.
"""

from __future__ import annotations

import numpy as np

RANK_TOL = 1e-10  # singular values below RANK_TOL·σ_max are numerical zeros (rank deficiency)


def thin_svd_of_product(
    left: np.ndarray, right: np.ndarray, *, tol: float = RANK_TOL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, Vh)`` of ``left @ right``: ``U: (m, k')``, ``s: (k',)`` descending, ``Vh: (k', n)``, with the
    numerical zeros (``s <= tol·s[0]``) dropped."""
    q, r = np.linalg.qr(np.asarray(left, dtype=np.float64))  # Q: (m, k), R: (k, k)
    us, s, vh = np.linalg.svd(r @ np.asarray(right, dtype=np.float64), full_matrices=False)  # (k, k'), (k',), (k', n)
    keep = s > tol * s[0] if s.size and s[0] > 0 else np.zeros(s.shape, dtype=bool)
    return q @ us[:, keep], s[keep], vh[keep]
