"""What one SecAgg+ round returns: the decoded weighted sum, or why the round was dropped."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dropout:
    """A client that left the round: the stage it left in and why (timeout, error, malformed)."""

    node: int
    stage: str
    reason: str


@dataclass(frozen=True)
class SecAggSum:
    """The decoded aggregate over the round's surviving clients ``S``.

    ``weight`` is ``Σ_{i∈S} w_i``; ``weighted_sums[key]`` is ``Σ_{i∈S} w_i·u_i`` (float64, the
    update ``u_i`` = client payload − global arrays, with the array's shape); ``metric_sums[name]``
    is ``Σ_{i∈S} w_i·m_i``. Each entry is within ``weight · error_bound`` of the exact value for the
    clipped updates (``contract.secagg``). ``public`` holds each survivor's plaintext protocol
    metrics (:data:`contract.secagg.PUBLIC_METRICS`); ``rejected_shares`` the unmask-stage shares
    the server discarded (their holders' vectors are still in the sum).
    """

    server_round: int
    weight: int
    weighted_sums: dict[str, np.ndarray]
    metric_sums: dict[str, float]
    survivors: tuple[int, ...]
    threshold: int
    error_bound: float
    dropped: tuple[Dropout, ...] = ()
    public: dict[int, dict[str, int | float]] = field(default_factory=dict)
    rejected_shares: tuple[tuple[int, int, str], ...] = ()  # (holder, owner or -1, why); vector still counts

    def mean_update(self) -> dict[str, np.ndarray]:
        """``Σ w_i·u_i / Σ w_i`` per key (float64)."""
        return {key: value / self.weight for key, value in self.weighted_sums.items()}

    def mean_metrics(self) -> dict[str, float]:
        """``Σ w_i·m_i / Σ w_i`` per masked metric."""
        return {name: value / self.weight for name, value in self.metric_sums.items()}


@dataclass(frozen=True)
class RoundDropped:
    """A round whose sum could not be decoded; the global arrays stay as they were."""

    server_round: int
    stage: str
    survivors: int
    threshold: int
    reason: str
    dropped: tuple[Dropout, ...] = ()

    def __str__(self) -> str:
        return f"round {self.server_round} dropped at {self.stage}: {self.reason}"


SecAggOutcome = SecAggSum | RoundDropped
