"""FLoRA's stacking: the clients' factors side by side instead of averaged (numpy only).

FLoRA (Wang et al., arXiv:2409.05976, §3; ``docs/algorithms.md §6``) sends every client the stacked factors

    B_stack = [B_1 … B_K]: (m, Σ r_i),   A_stack = [w_1 A_1; …; w_K A_K]: (Σ r_i, n)

with ``w_i = p_i s_i``, so that ``B_stack A_stack == Σ_i p_i s_i B_i A_i`` exactly (ranks may
differ).
Each client merges that product into its base and re-initialises fresh LoRA factors (unlike
FedEx-LoRA).

Where the weight goes: FLoRA's reference code multiplies the ``lora_A`` tensors by ``p_i`` when
stacking (``fed_utils/model_aggregation.py`` of ATP-1010/FederatedLLM), so ``weight_on="a"`` is the
default; ``"b"`` puts ``w_i`` on ``B_i`` instead. Either is exact.

Where the scale goes (our choice): the LoRA scale ``s_i`` (``α/r_i``, or ``α/√r_i`` with rsLoRA) is
folded into ``w_i`` too, so the stacked product *is* the effective update. Wrapping the stack in a
rank-``Σ r_i`` PEFT adapter would apply ``α/Σ r_i`` instead of each client's ``α/r_i`` — wrong
whenever ranks or scales differ — so the receiver adds ``B_stack A_stack`` to its base as is.
Clients with ``p_i = 0`` are left out of the stack (they contribute nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .averaging import normalise_weights
from .numerics import FloatDtype, Weights, compute_dtype


def flora_stack(
    a_list: Sequence[np.ndarray],
    b_list: Sequence[np.ndarray],
    weights: Weights,
    scale: float | Sequence[float],
    *,
    weight_on: Literal["a", "b"] = "a",
    dtype: FloatDtype = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked ``B: (m, Σ r_i)`` and ``A: (Σ r_i, n)`` whose product is ``Σ p_i s_i B_i A_i``.

    Parameters
    ----------
    a_list, b_list : Sequence[np.ndarray]
        Client ``i``'s ``A_i: (r_i, n)`` and ``B_i: (m, r_i)``; ``r_i`` may differ across clients.
    weights : Sequence[float] or np.ndarray
        ``p_i`` (normalised here).
    scale : float or Sequence[float]
        ``s`` for all clients, or ``s_i`` per client (``α/r_i`` differs with the rank).
    weight_on : {"a", "b"} (default: "a", as FLoRA's code)
        Which factor carries ``p_i s_i``.
    dtype : float32 or float64 (default: float64)
        Dtype of the stacked factors.
    """
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError(f"need K >= 1 (A, B) pairs, got {len(a_list)} A and {len(b_list)} B")
    if weight_on not in ("a", "b"):
        raise ValueError(f"weight_on must be 'a' or 'b', got {weight_on!r}")
    k = len(a_list)
    scales = [float(scale)] * k if isinstance(scale, int | float) else [float(x) for x in scale]
    if len(scales) != k:
        raise ValueError(f"got {len(scales)} scales for {k} clients")
    dt = compute_dtype(dtype)
    p = normalise_weights(weights, k)  # (K,)
    a = [np.asarray(x).astype(dt, copy=False) for x in a_list]  # each (r_i, n)
    b = [np.asarray(x).astype(dt, copy=False) for x in b_list]  # each (m, r_i)
    m, n = b[0].shape[0], a[0].shape[1]
    for i, (a_i, b_i) in enumerate(zip(a, b, strict=True)):
        ok = a_i.ndim == b_i.ndim == 2 and a_i.shape[0] == b_i.shape[1]
        if not ok or (b_i.shape[0], a_i.shape[1]) != (m, n):
            raise ValueError(
                f"client {i}: need A (r_i, {n}) and B ({m}, r_i), got A {a_i.shape}, B {b_i.shape}"
            )
    w = [dt.type(p_i * s_i) for p_i, s_i in zip(p, scales, strict=True)]
    live = [i for i in range(k) if p[i] > 0]
    if weight_on == "a":
        b_blocks = [b[i] for i in live]  # each (m, r_i)
        a_blocks = [w[i] * a[i] for i in live]  # each (r_i, n)
    else:
        b_blocks = [w[i] * b[i] for i in live]  # each (m, r_i)
        a_blocks = [a[i] for i in live]  # each (r_i, n)
    return np.concatenate(b_blocks, axis=1), np.concatenate(a_blocks, axis=0)  # (m, Σr), (Σr, n)


def flora_delta(b_stack: np.ndarray, a_stack: np.ndarray) -> np.ndarray:
    """What a client adds to its base (``(m, n)`` orientation): ``B_stack @ A_stack`` in float64."""
    if b_stack.ndim != 2 or a_stack.ndim != 2 or b_stack.shape[1] != a_stack.shape[0]:
        raise ValueError(f"need B_stack (m, k), A_stack (k, n): {b_stack.shape}, {a_stack.shape}")
    return b_stack.astype(np.float64) @ a_stack.astype(np.float64)  # (m, k) @ (k, n) -> (m, n)
