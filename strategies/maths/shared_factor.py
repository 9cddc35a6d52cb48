"""FFA-LoRA's shared factor: ``A`` frozen and shared, only ``B`` is averaged.

FFA-LoRA (Sun et al., arXiv:2403.12313, §3; ``docs/algorithms.md §7``) freezes ``A`` at its (seeded or
broadcast) initialisation on every client, so ``Σ p_i s·B_i A == s·(Σ p_i B_i) A`` and averaging
``B`` alone is exact FedAvg of the effective weights. That needs every reply's ``A`` to be
*bit-identical* to the global one: a client that trained ``A`` anyway (e.g. froze it before PEFT
wrapping, ``docs/algorithms.md §7``) or re-initialised it from another seed silently breaks exactness, so the
server checks it with :func:`check_frozen_a` and rejects the reply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .averaging import normalise_weights
from .numerics import FloatDtype, Weights, weighted_sum


class FrozenFactorMismatch(ValueError):
    """A client's frozen ``A`` is not bit-identical to the global ``A``."""


def check_frozen_a(a_list: Sequence[np.ndarray], global_a: np.ndarray, *, module: str = "") -> None:
    """Raise :class:`FrozenFactorMismatch` naming each client whose ``A`` differs from ``global_a``.

    Equality is bitwise: same shape, same dtype, same bytes (so ``-0.0 != 0.0`` and NaNs compare by
    payload); a float32 ``A`` that merely *rounds* to the global one still fails.
    """
    g = np.ascontiguousarray(global_a)
    problems: list[str] = []
    for i, a_i in enumerate(a_list):
        x = np.ascontiguousarray(a_i)
        if x.shape != g.shape or x.dtype != g.dtype:
            problems.append(f"client {i}: A is {x.shape} {x.dtype}, global A {g.shape} {g.dtype}")
        elif x.tobytes() != g.tobytes():
            bits = f"u{g.dtype.itemsize}"
            differ = int(np.count_nonzero(x.view(bits) != g.view(bits)))  # bit patterns, (r, n)
            gap = float(np.max(np.abs(x.astype(np.float64) - g.astype(np.float64))))
            problems.append(
                f"client {i}: {differ} of {g.size} entries differ bitwise (max |ΔA| = {gap:.3g})"
            )
    if problems:
        where = f" for module {module!r}" if module else ""
        raise FrozenFactorMismatch(
            f"FFA-LoRA needs every client's A{where} bit-identical to the global frozen A, "
            "but:\n  - "
            + "\n  - ".join(problems)
            + "\nAveraging only B would then not be exact. Freeze lora_A after PEFT wrapping "
            "and initialise it from the shared seed or the round-0 broadcast "
            "(docs/algorithms.md §7)."
        )


def ffa_aggregate(
    b_list: Sequence[np.ndarray],
    weights: Weights,
    *,
    a_list: Sequence[np.ndarray] | None = None,
    global_a: np.ndarray | None = None,
    module: str = "",
    dtype: FloatDtype = np.float64,
) -> np.ndarray:
    """The next global ``B̄ = Σ p_i B_i: (m, r)``, accumulated in ``dtype`` (float64).

    When ``a_list`` and ``global_a`` are given, :func:`check_frozen_a` runs first.
    """
    if (a_list is None) != (global_a is None):
        raise ValueError("pass both a_list and global_a to check the frozen A, or neither")
    if a_list is not None and global_a is not None:
        if len(a_list) != len(b_list):
            raise ValueError(f"got {len(a_list)} A factors but {len(b_list)} B factors")
        check_frozen_a(a_list, global_a, module=module)
    if not b_list:
        raise ValueError("FFA-LoRA aggregation needs at least one client")
    if any(np.ndim(b) != 2 for b in b_list):
        raise ValueError(f"B factors must be (m, r), got {[np.shape(b) for b in b_list]}")
    p = normalise_weights(weights, len(b_list))  # (K,)
    return weighted_sum(b_list, p, dtype)  # (m, r)
