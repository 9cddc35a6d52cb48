"""FedIT's deviation from exact aggregation, per module, without forming any ``(m, n)`` matrix.

``docs/algorithms.md §3``: ``dev_rel = ||s·ΔW_res||_F / ||s·Σ p_i B_i A_i||_F`` with the FedEx-LoRA
residual ``ΔW_res = Σ p_i B_i A_i − B̄ Ā`` (arXiv:2410.09432, §3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .averaging import Arrays, normalise_weights

if TYPE_CHECKING:
    from ..layout import LoraPair


def _frobenius_of_product(u: np.ndarray, v: np.ndarray) -> float:
    """``||U V||_F`` without forming ``U V``: with ``U = Q_u R_u`` and ``Vᵀ = Q_v R_v``,
    ``||U V||_F = ||R_u R_vᵀ||_F``. Cost ``O((m + n)·c²)`` for ``U: (m, c)``, ``V: (c, n)``, and
    no squared condition number (unlike a Gram-matrix trace)."""
    r_u = np.asarray(np.linalg.qr(u, mode="r"))  # (min(m, c), c)
    r_v = np.asarray(np.linalg.qr(v.T, mode="r"))  # (min(n, c), c)
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
