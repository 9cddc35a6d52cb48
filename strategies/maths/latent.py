"""Fed-SB's latent averaging: average the r×r latent ``R`` only, with rank-heterogeneous clients.

Fed-SB (Singhal et al., arXiv:2502.15436, §3; ``docs/algorithms.md §9``) trains only ``R: (r, r)`` between a
frozen ``B: (m, r)`` and ``A: (r, n)`` shared bit-identically by every client (LoRA-SB, ``docs/algorithms.md §8.1``), so

    Σ_i p_i s·B R_i A == s·B (Σ_i p_i R_i) A                              (docs/algorithms.md §9.1)

and averaging ``R`` is FedAvg of the effective weights, for any convex weights. Sums run in float64.

Rank-heterogeneous clients (``docs/algorithms.md §9.4``, our design): ``B``'s columns and ``A``'s rows are sorted by
descending singular value, a rank-``r_i`` client uses ``B[:, :r_i]``, ``A[:r_i, :]`` and trains
``R_i: (r_i, r_i)``; the server zero-pads ``R_i`` into the leading block of ``r × r``. Then
``s·B pad(R_i) A == s·B[:, :r_i] R_i A[:r_i, :]``, so the padded average is still
the exact average of the updates the clients actually applied. Every client must use the same ``s``
(Fed-SB uses ``s = 1``, ``docs/algorithms.md §8.1``). A rank-``r_i`` client then receives :func:`leading_block` of the
global ``R``; the parts outside its block stay on the server (the global model remains exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .averaging import normalise_weights
from .numerics import FloatDtype, Weights, compute_dtype


def _square(x: np.ndarray, what: str) -> int:
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"{what} must be a square (r, r) latent, got shape {x.shape}")
    return int(x.shape[0])


def pad_leading_block(x: np.ndarray, r: int) -> np.ndarray:
    """``R_i: (r_i, r_i)`` zero-padded to ``(r, r)`` with ``R_i`` in the top-left block.

    Keeps ``x``'s dtype. Raises ValueError if ``x`` is not square or ``r_i > r``.
    """
    r_i = _square(x, "R_i")
    if r_i > r:
        raise ValueError(f"cannot pad a rank-{r_i} latent into rank {r}")
    out = np.zeros((r, r), dtype=x.dtype)  # (r, r)
    out[:r_i, :r_i] = x  # (r_i, r_i)
    return out


def leading_block(x: np.ndarray, r_i: int) -> np.ndarray:
    """Top-left ``(r_i, r_i)`` block of a global ``R: (r, r)``: a rank-``r_i`` client's share."""
    r = _square(x, "R")
    if not 0 < r_i <= r:
        raise ValueError(f"client rank must be in 1..{r}, got {r_i}")
    return x[:r_i, :r_i].copy()  # (r_i, r_i)


def fedsb_aggregate(
    r_list: Sequence[np.ndarray],
    weights: Weights,
    *,
    rank: int | None = None,
    dtype: FloatDtype = np.float64,
) -> np.ndarray:
    """The next global latent ``Σ_i p_i pad(R_i): (r, r)``, accumulated in ``dtype`` (float64).

    Parameters
    ----------
    r_list : Sequence[np.ndarray]
        Each client's ``R_i: (r_i, r_i)``; ranks may differ (zero-padded, ``docs/algorithms.md §9.4``).
    weights : Sequence[float] or np.ndarray
        ``p_i`` (normalised here); ``1/K`` is the reference's choice, ``n_i`` weights are exact too.
    rank : int, optional
        The global rank ``r``; defaults to the largest ``r_i``.
    dtype : float32 or float64 (default: float64)
        Accumulation dtype and the dtype of the result.
    """
    if not r_list:
        raise ValueError("Fed-SB aggregation needs at least one client")
    ranks = [_square(np.asarray(x), f"client {i}'s R") for i, x in enumerate(r_list)]
    r = max(ranks) if rank is None else int(rank)
    if max(ranks) > r:
        raise ValueError(f"client ranks {ranks} exceed the global rank {r}")
    dt = compute_dtype(dtype)
    p = normalise_weights(weights, len(r_list)).astype(dt)  # (K,)
    acc = np.zeros((r, r), dtype=dt)  # (r, r)
    for p_i, x, r_i in zip(p, r_list, ranks, strict=True):
        acc[:r_i, :r_i] += p_i * np.asarray(x).astype(dt, copy=False)  # (r_i, r_i)
    return acc


def fedsb_delta(b: np.ndarray, latent: np.ndarray, a: np.ndarray, scale: float) -> np.ndarray:
    """Effective update ``s·B[:, :k] R A[:k, :]: (m, n)`` in float64, ``k`` = the latent's rank.

    ``B: (m, r)``, ``A: (r, n)`` are the shared frozen factors; ``latent: (k, k)`` with ``k ≤ r``.
    """
    k = _square(latent, "R")
    if b.ndim != 2 or a.ndim != 2 or b.shape[1] != a.shape[0] or k > b.shape[1]:
        raise ValueError(f"need B (m, r), A (r, n) with r >= {k}, got B {b.shape}, A {a.shape}")
    b_k = b[:, :k].astype(np.float64)  # (m, k)
    a_k = a[:k, :].astype(np.float64)  # (k, n)
    return scale * (b_k @ (latent.astype(np.float64) @ a_k))  # (m, k) @ (k, n) -> (m, n)
