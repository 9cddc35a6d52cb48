"""Random LoRA factors and weights for the exact-aggregation tests (the sizes of ``docs/exactness.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = [(48, 32), (32, 32)]  # (m, n): non-square (a wrong transpose raises) and square
RANK = 4
CLIENTS = [1, 2, 5]
SAMPLE_COUNTS = [7, 30, 1, 12, 50, 3, 21, 9, 40, 2, 15, 28]
# (dtype, rtol): float64 runs to round-off, float32 to fp32 tolerance
PRECISIONS = [(np.float64, 1e-10), (np.float32, 1e-5)]


@dataclass
class Case:
    """K clients' factors for one module, in ``dtype``, with their weights."""

    a: list[np.ndarray]  # each (r, n)
    b: list[np.ndarray]  # each (m, r)
    p: np.ndarray  # (K,), float64, Σ = 1
    m: int
    n: int
    r: int


def make_case(
    k: int,
    shape: tuple[int, int],
    weighted: bool,
    dtype: type = np.float64,
    seed: int = 0,
    r: int = RANK,
) -> Case:
    """Client factors around a common start, as after a local round (so the residual is small)."""
    rng = np.random.default_rng(seed)
    m, n = shape
    a0 = rng.standard_normal((r, n)) / np.sqrt(n)  # (r, n)
    b0 = rng.standard_normal((m, r)) * 0.1  # (m, r)
    a = [(a0 + 0.3 * rng.standard_normal((r, n)) / np.sqrt(n)).astype(dtype) for _ in range(k)]
    b = [(b0 + 0.05 * rng.standard_normal((m, r))).astype(dtype) for _ in range(k)]
    counts = np.asarray(SAMPLE_COUNTS[:k], dtype=np.float64)
    p = counts / counts.sum() if weighted else np.full(k, 1.0 / k)
    return Case(a, b, p, m, n, r)


def ideal_update(case: Case) -> np.ndarray:
    """``Σ p_i B_i A_i: (m, n)`` by an explicit float64 loop (independent of the code tested)."""
    out = np.zeros((case.m, case.n))
    for p_i, a_i, b_i in zip(case.p, case.a, case.b, strict=True):
        out += p_i * (b_i.astype(np.float64) @ a_i.astype(np.float64))
    return out


def means(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """``(Ā, B̄)`` in float64 by explicit loops."""
    a_bar = sum(p_i * a_i.astype(np.float64) for p_i, a_i in zip(case.p, case.a, strict=True))
    b_bar = sum(p_i * b_i.astype(np.float64) for p_i, b_i in zip(case.p, case.b, strict=True))
    return np.asarray(a_bar), np.asarray(b_bar)


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    """Entries within ``rtol`` relative to the largest entry of ``want`` (norm-wise tolerance)."""
    scale = max(float(np.abs(want).max()), 1e-300)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=0, atol=rtol * scale)
