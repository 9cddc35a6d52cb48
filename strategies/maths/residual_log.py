"""Versioned FedEx-LoRA base deltas, so that a client that missed rounds catches up exactly.

FedEx-LoRA changes the frozen base every round (``W0^t = W0^{t−1} + s·ΔW_res^t``), so a client that
skipped rounds holds a stale base (``docs/algorithms.md §5``). The server tags the
base with a version (0 = the pristine pretrained weights, ``t`` after round ``t``'s fold).

Every node holds the *canonical* delta ``C_v`` of its version (``contract.base_delta``:
``C_t = float32(float64(C_{t−1}) + float64(R_t))``), so all nodes - whatever rounds they skipped, and
the nodes of a run resumed from a checkpoint - hold the same base bit for bit. The log keeps:

- ``C_T`` per module (dense, float32; the server's own base and the dense message);
- each recent round's :class:`ResidualTransport` as given (factored ``U, V`` or dense), in ``dtype``;
  once they take more than ``budget × Σ m·n`` numbers the oldest are dropped (``floor`` rises).

So memory stays below ``(1 + budget)·Σ m·n`` numbers. A client at ``v ≥ floor`` whose missing rounds
are all factored and cheaper than ``m·n`` gets their factors side by side (with each round's column
count, to replay the recurrence round by round); any other client gets ``C_T`` itself, densely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.base_delta import canonical_step
from .numerics import FloatDtype, compute_dtype
from .transport import ResidualTransport


@dataclass(frozen=True)
class CumulativeDelta:
    """What a client needs to move its base from version ``since`` to ``version``.

    Attributes
    ----------
    since : int
        The version the factored modules continue from: the version the client asked for, or 0 when
        that version is older than the log's floor (then every module is dense).
    version : int
        The version the client's base is at after applying the deltas.
    modules : dict[str, ResidualTransport]
        Per module, ``(m, n)`` orientation: factored = rounds ``since+1..version`` side by side (an
        increment, replayed round by round); dense = ``C_version`` itself (absolute).
    splits : dict[str, tuple[int, ...]]
        For each factored module, the column count of each round, oldest first.
    """

    since: int
    version: int
    modules: dict[str, ResidualTransport]
    splits: dict[str, tuple[int, ...]]

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
        self._canonical = {k: np.zeros(shape, dtype=np.float32) for k, shape in self.shapes.items()}  # C_T: (m, n)
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
        """Numbers held: ``C_T`` plus every kept round."""
        return self.dense_elements + self._kept_elements()

    def canonical(self) -> dict[str, np.ndarray]:
        """``C_T`` per module, ``(m, n)`` float32 (copies): the base delta every node holds at version T."""
        return {k: v.copy() for k, v in self._canonical.items()}

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
        for name, t in entry.items():  # exactly what a node computes from the wire (float32 arrays)
            wire = t.astype(np.float32)
            self._canonical[name] = canonical_step(self._canonical[name], *wire.arrays)
        self._rounds.append(entry)
        while self._rounds and self._kept_elements() > self.budget * self.dense_elements:
            self._rounds.pop(0)  # C_T already holds it; stale clients get C_T densely
            self._floor += 1
        return self.version

    def delta_since(self, version: int) -> CumulativeDelta:
        """What brings a node at ``version`` to :attr:`version`, as a :class:`CumulativeDelta`.

        Per module: the kept rounds' factors side by side (exact, no arithmetic) while every missing
        round is factored, kept, and the total stays smaller than ``m·n``; otherwise ``C_T`` densely.
        """
        if not 0 <= version <= self.version:
            raise ValueError(f"base version {version} is not in 0..{self.version}")
        since = version if version >= self._floor else 0
        kept = self._rounds[version - self._floor :] if version >= self._floor else None
        out: dict[str, ResidualTransport] = {}
        splits: dict[str, tuple[int, ...]] = {}
        for name, (m, n) in self.shapes.items():
            parts = [rnd[name] for rnd in kept] if kept is not None else None
            if parts is not None and all(t.form == "factored" for t in parts):
                columns = sum(t.columns or 0 for t in parts)
                if columns * (m + n) < m * n:
                    u = np.concatenate([np.zeros((m, 0), self.dtype), *(t.arrays[0] for t in parts)], axis=1)  # (m, k)
                    v = np.concatenate([np.zeros((0, n), self.dtype), *(t.arrays[1] for t in parts)], axis=0)  # (k, n)
                    out[name] = ResidualTransport("factored", (u, v), (m, n))
                    splits[name] = tuple(t.columns or 0 for t in parts)
                    continue
            out[name] = ResidualTransport.from_dense(self._canonical[name].copy())  # C_T: (m, n), absolute
        return CumulativeDelta(since, self.version, out, splits)

    # --- checkpointing (server/checkpoint.py): arrays plus plain metadata, no pickle -------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """Everything needed to rebuild this log bit for bit: named arrays and JSON-able metadata."""
        arrays: dict[str, np.ndarray] = {f"canonical/{name}": d for name, d in self._canonical.items()}
        forms: list[dict[str, str]] = []
        for i, rnd in enumerate(self._rounds):
            forms.append({name: t.form for name, t in rnd.items()})
            for name, t in rnd.items():
                for j, array in enumerate(t.arrays):
                    arrays[f"round/{i}/{name}/{j}"] = array
        meta = {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "dtype": np.dtype(self.dtype).name,
            "budget": self.budget,
            "floor": self._floor,
            "forms": forms,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> ResidualLog:
        """Inverse of :meth:`state`."""
        shapes = {k: (int(m), int(n)) for k, (m, n) in dict(meta["shapes"]).items()}
        log = cls(shapes, dtype=np.dtype(str(meta["dtype"])).type, budget=float(meta["budget"]))
        log._floor = int(meta["floor"])
        log._canonical = {name: np.array(arrays[f"canonical/{name}"], dtype=np.float32) for name in shapes}
        for i, forms in enumerate(meta["forms"]):
            entry: dict[str, ResidualTransport] = {}
            for name, form in forms.items():
                count = 1 if form == "dense" else 2
                parts = tuple(np.array(arrays[f"round/{i}/{name}/{j}"]) for j in range(count))
                entry[name] = ResidualTransport(form, parts, shapes[name])
            log._rounds.append(entry)
        return log
