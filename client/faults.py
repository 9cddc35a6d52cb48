"""Injected client faults (``faults.*``, the section ``contract.config.FaultsConfig``).

The draw depends only on ``(seed, round, partition)``, so a run with faults is as reproducible as one
without, and a test knows which clients misbehave without looking.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from contract import RunConfig

Fault = Literal["fail", "malformed", "slow"]
_STREAM = 0xFA17  # separates this draw from every other seeded stream of the run


class InjectedFailure(RuntimeError):
    """A client failure injected on purpose (``faults.fail-fraction``)."""


def draw_fault(config: RunConfig, *, server_round: int, partition_id: int) -> Fault | None:
    """Which fault, if any, this client injects in this round."""
    faults = config.faults
    if not faults.enabled:
        return None
    u = float(np.random.default_rng([config.seed, server_round, partition_id, _STREAM]).random())
    fractions: tuple[tuple[Fault, float], ...] = (
        ("fail", faults.fail_fraction), ("malformed", faults.malformed_fraction), ("slow", faults.slow_fraction))
    for name, fraction in fractions:
        if u < fraction:
            return name
        u -= fraction
    return None


def malform(payload: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of ``payload`` with a NaN in its first floating array (the server must drop it)."""
    out = dict(payload)
    for key, value in out.items():
        if np.issubdtype(value.dtype, np.floating):
            broken = value.copy()
            broken.flat[0] = np.nan
            out[key] = broken
            break
    return out
