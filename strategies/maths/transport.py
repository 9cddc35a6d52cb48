"""How a ``(m, n)`` base-weight delta travels and lands: dense or exact factors, and orientation.

FedEx-LoRA folds ``s·ΔW_res`` into the frozen base (arXiv:2410.09432, §3; ``docs/algorithms.md §4``). The
delta can be sent densely (``m·n`` numbers) or as exact factors ``U: (m, k)``, ``V: (k, n)``
(``k·(m + n)`` numbers); the factors are picked exactly when they are smaller (``docs/algorithms.md §4.3``). Deltas are
always computed and sent in the ``(m, n)`` orientation of ``nn.Linear``; the receiver transposes
them for ``fan_in_fan_out`` layers (GPT-2 ``Conv1D`` stores ``(n, m)``; ``docs/algorithms.md §1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .numerics import FloatDtype, compute_dtype


@dataclass(frozen=True)
class ResidualTransport:
    """One module's base-weight delta ``D: (m, n)`` in the form that is cheaper to send.

    Parameters
    ----------
    form : {"dense", "factored"}
        ``"dense"``: ``arrays == (D,)`` with ``D: (m, n)``. ``"factored"``: ``arrays == (U, V)``
        with ``U: (m, k)``, ``V: (k, n)`` and ``D == U @ V`` (any scale already inside ``V``).
        ``k == 0`` is a valid factored form of an exactly-zero delta (0 elements).
    arrays : tuple[np.ndarray, ...]
        The arrays to send, as above.
    shape : tuple[int, int]
        ``(m, n)`` of the delta in ``nn.Linear`` orientation.
    """

    form: Literal["dense", "factored"]
    arrays: tuple[np.ndarray, ...]
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        """Check that the arrays match ``form`` and ``shape``."""
        m, n = self.shape
        if self.form == "dense":
            ok = len(self.arrays) == 1 and self.arrays[0].shape == (m, n)
        elif self.form == "factored":
            ok = (
                len(self.arrays) == 2
                and self.arrays[0].ndim == 2
                and self.arrays[0].shape[0] == m
                and self.arrays[1].shape == (self.arrays[0].shape[1], n)
            )
        else:
            raise ValueError(f"form must be 'dense' or 'factored', got {self.form!r}")
        if not ok:
            got = [a.shape for a in self.arrays]
            raise ValueError(f"{self.form} residual of shape {self.shape} cannot hold arrays {got}")

    @property
    def elements(self) -> int:
        """Numbers on the wire: ``m·n`` dense, ``k·(m + n)`` factored."""
        return int(sum(a.size for a in self.arrays))

    @property
    def columns(self) -> int | None:
        """Inner size ``k`` of the factored form (an upper bound on the rank); None when dense."""
        return int(self.arrays[0].shape[1]) if self.form == "factored" else None

    @classmethod
    def from_factors(cls, u: np.ndarray, v: np.ndarray) -> ResidualTransport:
        """The cheaper form of ``U @ V``: factored iff ``k·(m + n) < m·n``; ties go dense.

        ``U: (m, k)``, ``V: (k, n)``; the dense product is formed in their dtype only when chosen.
        """
        if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[0]:
            raise ValueError(f"factors must be U (m, k) and V (k, n), got {u.shape} and {v.shape}")
        (m, k), n = u.shape, v.shape[1]
        if k * (m + n) < m * n:
            return cls("factored", (u, v), (m, n))
        return cls("dense", (u @ v,), (m, n))  # (m, k) @ (k, n) -> (m, n)

    @classmethod
    def from_dense(cls, delta: np.ndarray) -> ResidualTransport:
        """Wrap a dense ``(m, n)`` delta (no factorisation is attempted)."""
        if delta.ndim != 2:
            raise ValueError(f"a dense delta must be (m, n), got {delta.shape}")
        return cls("dense", (delta,), (int(delta.shape[0]), int(delta.shape[1])))

    def to_dense(self, dtype: FloatDtype = np.float64) -> np.ndarray:
        """The delta ``D: (m, n)`` in ``dtype`` (a factored product is formed in ``dtype``)."""
        dt = compute_dtype(dtype)
        if self.form == "dense":
            return self.arrays[0].astype(dt)  # (m, n)
        u, v = (a.astype(dt, copy=False) for a in self.arrays)  # U: (m, k), V: (k, n)
        return u @ v  # (m, n)

    def astype(self, dtype: FloatDtype) -> ResidualTransport:
        """The same form with every array cast to ``dtype`` (e.g. float32 for the wire)."""
        dt = compute_dtype(dtype)
        return ResidualTransport(self.form, tuple(a.astype(dt) for a in self.arrays), self.shape)


def to_stored(delta: np.ndarray, fan_in_fan_out: bool) -> np.ndarray:
    """A ``(m, n)`` delta in the base layer's stored orientation: ``(n, m)`` for ``fan_in_fan_out``.

    GPT-2 ``Conv1D`` computes ``y = x W + b`` with ``W: (n, m)``; ``nn.Linear`` stores ``(m, n)``.
    The FedEx reference transposes for ``nn.Linear`` too, which is silently wrong on square modules
    (``docs/algorithms.md §1``); here the transpose happens only for ``fan_in_fan_out``.
    """
    if delta.ndim != 2:
        raise ValueError(f"a weight delta must be 2-D (m, n), got {delta.shape}")
    return delta.T if fan_in_fan_out else delta  # (n, m) or (m, n)


def fold_into_base(
    base: np.ndarray, delta: np.ndarray | ResidualTransport, fan_in_fan_out: bool
) -> np.ndarray:
    """``base + delta`` in the stored orientation, added in float64 and cast back to ``base.dtype``.

    Parameters
    ----------
    base : np.ndarray
        The stored base weight: ``(m, n)``, or ``(n, m)`` when ``fan_in_fan_out``.
    delta : np.ndarray or ResidualTransport
        The delta in ``(m, n)`` orientation, any scale already applied (``s·ΔW_res``).
    fan_in_fan_out : bool
        The layer's flag (``LoraPair.fan_in_fan_out``).

    Raises
    ------
    ValueError
        If the oriented delta's shape differs from ``base``'s, which on non-square modules catches a
        wrong ``fan_in_fan_out`` flag.
    """
    dense = delta.to_dense() if isinstance(delta, ResidualTransport) else np.asarray(delta)
    stored = to_stored(dense, fan_in_fan_out)  # (m, n) or (n, m)
    if stored.shape != base.shape:
        raise ValueError(
            f"delta {dense.shape} (m, n) becomes {stored.shape} in stored orientation "
            f"(fan_in_fan_out={fan_in_fan_out}) but the base weight is {base.shape}; is the "
            "layer's fan_in_fan_out flag right?"
        )
    return (base.astype(np.float64) + stored).astype(base.dtype)  # stored shape
