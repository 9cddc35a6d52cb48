"""Aggregation maths on plain numpy arrays (no Flower records, no torch).

Notation (``algorithms.md`` §0.2): client ``i`` of ``K`` holds ``A_i: (r, n)`` and ``B_i: (m, r)``
per module; ``p_i >= 0`` with ``Σ p_i = 1``; ``s`` is the LoRA scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .layout import LoraPair

Arrays = Mapping[str, np.ndarray]


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


def lora_residual(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Dense FedEx-LoRA residual ``ΔW_res = Σ p_i B_i A_i − B̄ Ā``, shape ``(m, n)``, float64.

    This is the error of FedIT's factor averaging (FedEx-LoRA, arXiv:2410.09432, §3; see
    ``algorithms.md`` §1.1). Zero when all clients share ``A`` or share ``B``; rank at most
    ``min((K−1)·r, m, n)``. It is *not* scaled by ``s`` and not transposed for ``fan_in_fan_out``.
    """
    p = normalise_weights(weights, len(a_list))
    a = [np.asarray(x, dtype=np.float64) for x in a_list]  # each (r, n)
    b = [np.asarray(x, dtype=np.float64) for x in b_list]  # each (m, r)
    a_bar = sum(p_i * a_i for p_i, a_i in zip(p, a, strict=True))  # (r, n)
    b_bar = sum(p_i * b_i for p_i, b_i in zip(p, b, strict=True))  # (m, r)
    mean_product = sum(p_i * (b_i @ a_i) for p_i, a_i, b_i in zip(p, a, b, strict=True))  # (m, n)
    return np.asarray(mean_product - b_bar @ a_bar)  # (m, n)


def _frobenius_of_product(u: np.ndarray, v: np.ndarray) -> float:
    """``||U V||_F`` without forming ``U V``: with ``U = Q_u R_u`` and ``Vᵀ = Q_v R_v``,
    ``||U V||_F = ||R_u R_vᵀ||_F``. Cost ``O((m + n)·c²)`` for ``U: (m, c)``, ``V: (c, n)``, and
    no squared condition number (unlike a Gram-matrix trace)."""
    r_u = np.linalg.qr(u, mode="r")  # (min(m, c), c)
    r_v = np.linalg.qr(v.T, mode="r")  # (min(n, c), c)
    return float(np.linalg.norm(r_u @ r_v.T))  # (min(m, c), min(n, c))


def lora_deviation(
    arrays: Sequence[Arrays], weights: Sequence[float] | np.ndarray, layout: Mapping[str, LoraPair]
) -> dict[str, float]:
    """FedIT's relative deviation from exact aggregation, per module.

    ``dev_rel = ||s·(Σ p_i B_i A_i − B̄ Ā)||_F / ||s·Σ p_i B_i A_i||_F`` (0 when both norms are 0;
    ``inf`` when only the denominator is). It measures how far FedIT's naive factor averaging
    (arXiv:2305.05644) lands from the average of the clients' effective updates (FedEx-LoRA,
    arXiv:2410.09432, §3). ``s`` cancels unless it is 0, and the Frobenius norm is invariant under
    the ``fan_in_fan_out`` transpose, so neither changes the value.

    The residual is evaluated in its covariance form ``Σ p_i (B_i − B̄)(A_i − Ā)`` as a product of
    stacked factors, so the ``(m, n)`` matrices are never formed and shared ``A`` or shared ``B``
    give an exact zero factor.
    """
    p = normalise_weights(weights, len(arrays))
    out: dict[str, float] = {}
    for module, pair in layout.items():
        a = np.stack([np.asarray(c[pair.a_key], dtype=np.float64) for c in arrays])  # (K, r, n)
        b = np.stack([np.asarray(c[pair.b_key], dtype=np.float64) for c in arrays])  # (K, m, r)
        k, r, n = a.shape
        m = b.shape[1]
        a_bar = np.einsum("k,krn->rn", p, a)  # (r, n)
        b_bar = np.einsum("k,kmr->mr", p, b)  # (m, r)
        # Residual = U_res V_res with U_res: (m, K·r) = [p_i (B_i − B̄)], V_res: (K·r, n) = [A_i − Ā]
        u_res = (p[:, None, None] * (b - b_bar)).transpose(1, 0, 2).reshape(m, k * r)
        v_res = (a - a_bar).reshape(k * r, n)
        # Exact mean product Σ p_i B_i A_i = U V with U = [p_i B_i]: (m, K·r), V = [A_i]: (K·r, n)
        u = (p[:, None, None] * b).transpose(1, 0, 2).reshape(m, k * r)
        v = a.reshape(k * r, n)
        scale = abs(pair.scale)
        num = scale * _frobenius_of_product(u_res, v_res)
        den = scale * _frobenius_of_product(u, v)
        out[module] = 0.0 if num == 0.0 else (num / den if den > 0.0 else float("inf"))
    return out
