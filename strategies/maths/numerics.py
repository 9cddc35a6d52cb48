"""Dtype checks, factor-shape checks and float64 sums shared by the aggregation maths (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatDtype: TypeAlias = type[np.float32] | type[np.float64] | np.dtype[np.floating]
"""The dtype a computation runs in: ``np.float64`` (the default everywhere) or ``np.float32``."""

Weights: TypeAlias = Sequence[float] | npt.NDArray[np.floating]


def compute_dtype(dtype: FloatDtype) -> np.dtype[np.floating]:
    """``np.dtype`` of ``dtype`` after checking it is float32 or float64.

    float16/bfloat16 arithmetic loses exactness (``docs/algorithms.md §1``, precision).
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"compute dtype must be float32 or float64, got {dt}")
    return dt


def lora_factors(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], dtype: FloatDtype = np.float64
) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, int, int]]:
    """Check K same-rank LoRA factor pairs and cast them to ``dtype``.

    Returns
    -------
    a : list of ``(r, n)`` arrays, b : list of ``(m, r)`` arrays, and ``(m, r, n)``.

    Raises
    ------
    ValueError
        If there are no clients, the two lists differ in length, or any pair is not ``A: (r, n)``,
        ``B: (m, r)`` with the shapes of client 0.
    """
    if len(a_list) != len(b_list):
        raise ValueError(f"got {len(a_list)} A factors but {len(b_list)} B factors")
    if not a_list:
        raise ValueError("aggregation needs at least one client")
    dt = compute_dtype(dtype)
    a = [np.asarray(x).astype(dt, copy=False) for x in a_list]  # each (r, n)
    b = [np.asarray(x).astype(dt, copy=False) for x in b_list]  # each (m, r)
    a0, b0 = a[0].shape, b[0].shape
    if len(a0) != 2 or len(b0) != 2 or a0[0] != b0[1]:
        raise ValueError(f"client 0: expected A (r, n) and B (m, r), got A {a0} and B {b0}")
    for i, (a_i, b_i) in enumerate(zip(a, b, strict=True)):
        if a_i.shape != a0 or b_i.shape != b0:
            raise ValueError(
                f"client {i}: A {a_i.shape}, B {b_i.shape}; client 0 has A {a0}, B {b0} "
                "(this aggregator needs one rank for all clients)"
            )
    return a, b, (b0[0], a0[0], a0[1])


def weighted_sum(
    arrays: Sequence[np.ndarray], p: npt.NDArray[np.float64], dtype: FloatDtype = np.float64
) -> np.ndarray:
    """``Σ_i p_i X_i`` accumulated in ``dtype`` (float64 by default); all ``X_i`` alike in shape."""
    dt = compute_dtype(dtype)
    shape = np.shape(arrays[0])
    acc = np.zeros(shape, dtype=dt)
    for i, (p_i, x_i) in enumerate(zip(p.astype(dt), arrays, strict=True)):
        if np.shape(x_i) != shape:
            raise ValueError(f"client {i} sent shape {np.shape(x_i)}, client 0 sent {shape}")
        acc += p_i * np.asarray(x_i).astype(dt, copy=False)
    return acc
