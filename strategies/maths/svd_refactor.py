"""FedSVD's re-factorisation: the same product ``B A`` with an orthonormal ``A`` (numpy, float64).

FedSVD (Lee et al., arXiv 2505.12805, §3; ``docs/algorithms.md §16``) trains only ``B`` over a
shared, fixed ``A``; after averaging, the server rewrites the round's product ``B̄ A`` as
``B' A'`` with the rows of ``A'`` orthonormal (the right singular vectors of ``B̄ A``) and
``B' = U Σ``. We compute it without forming the ``(m, n)`` product: ``Aᵀ = Q R`` (QR, ``Q: (n, r)``
with orthonormal columns), ``B̄ Rᵀ = U Σ Vᵀ`` (an ``(m, r)`` SVD), so

    ``B̄ A = B̄ Rᵀ Qᵀ = U Σ (Q V)ᵀ``,  ``A' = (Q V)ᵀ: (r, n)``,  ``B' = U Σ: (m, r)``.

``A'`` always has ``r`` orthonormal rows, even when ``B̄ A`` has rank below ``r`` (e.g. ``B̄ = 0``
before any training): the directions with zero singular value are orthonormal completions from
``Q``. The cost is ``O((m + n) r²)``.
"""

from __future__ import annotations

import numpy as np


def orthonormal_refactor(b: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(B', A')`` with ``B' A' = B A`` and ``A' A'ᵀ = I_r``, in float64, singular values descending.

    Parameters
    ----------
    b : np.ndarray
        ``B: (m, r)``.
    a : np.ndarray
        ``A: (r, n)`` with ``r <= n`` and full row rank (a LoRA ``A`` drawn at random or a previous
        ``A'``).

    Raises
    ------
    ValueError
        On shapes that do not chain, ``r > n``, or an ``A`` of rank below ``r`` (its row space
        cannot carry the product's orthonormal basis).
    """
    b64 = np.asarray(b, dtype=np.float64)  # (m, r)
    a64 = np.asarray(a, dtype=np.float64)  # (r, n)
    if b64.ndim != 2 or a64.ndim != 2 or b64.shape[1] != a64.shape[0]:
        raise ValueError(f"B and A do not chain: expected B (m, r) and A (r, n), got B {b64.shape} and A {a64.shape}")
    r, n = a64.shape
    if r > n:
        raise ValueError(f"A has more rows than columns ({r} > {n}); FedSVD needs r <= n")
    q, upper = np.linalg.qr(a64.T)  # Aᵀ = Q R: Q (n, r), R (r, r)
    diag = np.abs(np.diag(upper))
    if diag.size and diag.min() <= 1e-12 * max(diag.max(), 1e-300):
        raise ValueError("A is rank deficient; FedSVD's re-factorisation needs an A of full row rank")
    m = b64.shape[0]
    # B Rᵀ = U Σ Vᵀ with V: (r, r) square, so A' keeps r rows; U: (m, k), Σ: (k,), k = min(m, r)
    u, s, vt = np.linalg.svd(b64 @ upper.T, full_matrices=m < r)
    k = s.size
    b_new = np.zeros((m, r))
    b_new[:, :k] = u[:, :k] * s  # B' = U Σ, zero columns past min(m, r): (m, r)
    return b_new, (q @ vt.T).T  # A' = (Q V)ᵀ: (r, n)
