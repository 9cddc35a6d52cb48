"""Versioned FedEx-LoRA base deltas, so that a client that missed rounds catches up exactly.

FedEx-LoRA changes the frozen base every round (``W0^t = W0^{t−1} + s·ΔW_res^t``), so a client that
skipped rounds holds a stale base (``algorithms.md`` §1.5, §1.10 item 6, §6). The server tags the
base with a version (0 = the pristine pretrained weights, ``t`` after round ``t``'s fold) and sends
a client at version ``v`` the cumulative delta ``Σ_{t=v+1}^{T} s·ΔW_res^t``.

Storage (per module, in ``dtype``, float32 by default as §1.7 asks of master copies):

- each recorded round keeps its :class:`ResidualTransport` as given (factored ``U, V`` or dense);
- once the rounds kept take more than ``budget × Σ m·n`` numbers, the oldest rounds are summed
  (in float64) into one dense *base delta* covering versions ``1..floor``.

So memory stays below ``(1 + budget)·Σ m·n`` numbers after every :meth:`ResidualLog.record`.
A client at ``v ≥ floor`` gets an incremental delta; a client older than ``floor`` gets the delta
from version 0 and must re-apply it to its pristine base (``CumulativeDelta.since == 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._common import FloatDtype, compute_dtype
from .transport import ResidualTransport


@dataclass(frozen=True)
class CumulativeDelta:
    """What a client needs to move its base from version ``since`` to ``version``.

    Attributes
    ----------
    since : int
        The base version the deltas are relative to: the version the client asked for, or 0 when
        that version is older than the log's floor (the client must then add the deltas to its
        pristine pretrained base instead of its current one).
    version : int
        The version the client's base is at after applying the deltas.
    modules : dict[str, ResidualTransport]
        Per module, ``Σ_{t=since+1}^{version} s·ΔW_res^t`` in ``(m, n)`` orientation.
    """

    since: int
    version: int
    modules: dict[str, ResidualTransport]

    @property
    def elements(self) -> int:
        """Numbers on the wire for all modules."""
        return sum(t.elements for t in self.modules.values())


class ResidualLog:
    """Per-round FedEx-LoRA residuals with version numbers and bounded memory.

    Parameters
    ----------
    shapes : Mapping[str, tuple[int, int]]
        Module name -> ``(m, n)`` of its residual (``nn.Linear`` orientation).
    dtype : float32 or float64 (default: float32)
        Storage dtype of recorded residuals and of the dense base delta; sums run in float64.
    budget : float (default: 1.0)
        Kept rounds may hold at most ``budget × Σ m·n`` numbers before the oldest are collapsed;
        0 collapses every round at once (only the current version is then served incrementally).
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, int]],
        *,
        dtype: FloatDtype = np.float32,
        budget: float = 1.0,
    ) -> None:
        if not shapes:
            raise ValueError("ResidualLog needs at least one module")
        if not budget >= 0:
            raise ValueError(f"budget must be >= 0, got {budget!r}")
        self.shapes = {k: (int(m), int(n)) for k, (m, n) in shapes.items()}
        self.dtype = compute_dtype(dtype)
        self.budget = float(budget)
        self.dense_elements = sum(m * n for m, n in self.shapes.values())
        self._floor = 0
        self._base: dict[str, np.ndarray] | None = None  # each (m, n): Σ rounds 1..floor
        self._rounds: list[dict[str, ResidualTransport]] = []  # rounds floor+1..version

    @property
    def version(self) -> int:
        """The current base version (the number of rounds recorded)."""
        return self._floor + len(self._rounds)

    @property
    def floor(self) -> int:
        """The oldest version that still gets an incremental delta."""
        return self._floor

    @property
    def stored_elements(self) -> int:
        """Numbers held: the dense base delta (once it exists) plus every kept round."""
        base = self.dense_elements if self._base is not None else 0
        return base + self._kept_elements()

    def _kept_elements(self) -> int:
        return sum(t.elements for rnd in self._rounds for t in rnd.values())

    def record(self, residuals: Mapping[str, ResidualTransport | np.ndarray]) -> int:
        """Store one round's folded residuals ``s·ΔW_res`` and return the new version.

        Every module of the log must be present (send a zero residual, e.g. ``k = 0`` factors, for
        a module with nothing to fold). Dense arrays are taken as ``(m, n)``.
        """
        if set(residuals) != set(self.shapes):
            missing, extra = set(self.shapes) - set(residuals), set(residuals) - set(self.shapes)
            raise ValueError(f"round residuals: missing {sorted(missing)}, unknown {sorted(extra)}")
        entry: dict[str, ResidualTransport] = {}
        for name, res in residuals.items():
            t = res if isinstance(res, ResidualTransport) else ResidualTransport.from_dense(res)
            if t.shape != self.shapes[name]:
                raise ValueError(f"{name}: residual {t.shape}, log expects {self.shapes[name]}")
            entry[name] = t.astype(self.dtype)
        self._rounds.append(entry)
        while self._rounds and self._kept_elements() > self.budget * self.dense_elements:
            self._collapse_oldest()
        return self.version

    def _collapse_oldest(self) -> None:
        oldest = self._rounds.pop(0)
        base = self._base
        if base is None:
            base = {k: np.zeros(shape, dtype=self.dtype) for k, shape in self.shapes.items()}
        for name, t in oldest.items():
            summed = base[name].astype(np.float64) + t.to_dense(np.float64)  # (m, n)
            base[name] = summed.astype(self.dtype)
        self._base = base
        self._floor += 1

    def delta_since(self, version: int) -> CumulativeDelta:
        """What brings a base at ``version`` to :attr:`version`, as a :class:`CumulativeDelta`.

        Kept factored rounds are concatenated (``[U_{v+1} … U_T]``, ``[V_{v+1}; …; V_T]``, exact, no
        arithmetic) while that stays smaller than ``m·n``; otherwise they are summed densely in
        float64 and cast to the log's dtype.
        """
        if not 0 <= version <= self.version:
            raise ValueError(f"base version {version} is not in 0..{self.version}")
        since = version if version >= self._floor else 0
        rounds = self._rounds[since - self._floor :] if since >= self._floor else self._rounds
        use_base = since < self._floor
        out: dict[str, ResidualTransport] = {}
        for name, (m, n) in self.shapes.items():
            parts = [rnd[name] for rnd in rounds]
            columns = sum(t.columns or 0 for t in parts)
            factored = all(t.form == "factored" for t in parts)
            if not use_base and factored and columns * (m + n) < m * n:
                u_parts = [np.zeros((m, 0), self.dtype), *(t.arrays[0] for t in parts)]
                v_parts = [np.zeros((0, n), self.dtype), *(t.arrays[1] for t in parts)]
                u = np.concatenate(u_parts, axis=1)  # (m, k)
                v = np.concatenate(v_parts, axis=0)  # (k, n)
                out[name] = ResidualTransport("factored", (u, v), (m, n))
                continue
            acc = np.zeros((m, n), dtype=np.float64)  # (m, n)
            if use_base and self._base is not None:
                acc += self._base[name]
            for t in parts:
                acc += t.to_dense(np.float64)
            out[name] = ResidualTransport.from_dense(acc.astype(self.dtype))
        return CumulativeDelta(since, self.version, out)
