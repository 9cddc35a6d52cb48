"""Aggregation weights and the per-key weighted mean of client arrays (numpy only).

Notation (``docs/algorithms.md §1``): client ``i`` of ``K`` holds ``A_i: (r, n)`` and ``B_i: (m, r)``
per module; ``p_i >= 0`` with ``Σ p_i = 1`` (``docs/algorithms.md §2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]
"""One client's payload: array key -> array."""


def aggregation_weights(num_examples: Sequence[int], weighted: bool) -> np.ndarray:
    """Aggregation weights ``p`` of shape ``(K,)``, float64, summing to 1.

    Parameters
    ----------
    num_examples : Sequence[int]
        ``n_i`` per client; all must be positive.
    weighted : bool
        ``p_i = n_i / Σ n_j`` (FedAvg, arXiv:1602.05629) if True, else ``p_i = 1/K`` (what the
        FedEx-LoRA and Fed-SB reference code does).
    """
    n = np.asarray(num_examples, dtype=np.float64)  # (K,)
    if n.ndim != 1 or n.size == 0:
        raise ValueError("aggregation needs at least one client")
    if not weighted:
        return np.full(n.size, 1.0 / n.size)
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise ValueError(f"num-examples must all be positive, got {list(num_examples)}")
    return n / n.sum()


def normalise_weights(weights: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Aggregation weights ``p: (K,)`` as float64 scaled to ``Σ p_i = 1``.

    Raises
    ------
    ValueError
        If there are not ``k`` weights, or any is negative or non-finite, or all are zero.
    """
    p = np.asarray(weights, dtype=np.float64)  # (K,)
    if p.shape != (k,):
        raise ValueError(f"got {p.size} weights for {k} clients")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {p.tolist()}")
    return p / p.sum()


def weighted_mean(
    arrays: Sequence[Arrays], weights: Sequence[float] | np.ndarray
) -> dict[str, np.ndarray]:
    """Per-key weighted mean ``Σ_i p_i X_i`` with ``p`` normalised to sum to 1.

    Accumulates in float64 and casts back to each key's input dtype (integer dtypes are rounded
    first), so K float32 or float16 replies lose no more precision than one.

    Raises
    ------
    ValueError
        If the clients' keys, shapes or dtypes differ, or the weights are unusable.
    """
    if not arrays:
        raise ValueError("weighted_mean needs at least one client")
    p = normalise_weights(weights, len(arrays))
    first = arrays[0]
    for i, client in enumerate(arrays[1:], start=1):
        if set(client) != set(first):
            raise ValueError(f"client {i} has keys {sorted(client)}, client 0 has {sorted(first)}")
    out: dict[str, np.ndarray] = {}
    for key, ref in first.items():
        acc = np.zeros(ref.shape, dtype=np.float64)
        for i, (client, p_i) in enumerate(zip(arrays, p, strict=True)):
            x = np.asarray(client[key])
            if x.shape != ref.shape or x.dtype != ref.dtype:
                raise ValueError(
                    f"`{key}`: client {i} has {x.shape} {x.dtype}, client 0 has {ref.shape} {ref.dtype}"
                )
            acc += p_i * x.astype(np.float64, copy=False)
        if np.issubdtype(ref.dtype, np.integer):
            acc = np.rint(acc)
        out[key] = acc.astype(ref.dtype)
    return out
