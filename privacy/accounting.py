"""Privacy accounting that lives across rounds: the accountant's history in Flower's ``Context.state``.

DP-SGD with Poisson sampling is a composition of subsampled Gaussian mechanisms, one per step,
each fully described by ``(noise_multiplier σ, sample_rate q)``. Opacus's accountants keep exactly
that as their ``history``: a list of ``(σ, q, steps)``. Composition is commutative (RDP adds the
per-step Rényi divergences, Mironov 2017, arXiv 1702.07476, Prop. 1; PRV convolves privacy loss
distributions, Gopi et al. 2021, arXiv 2106.02848), so entries with the same ``(σ, q)`` are merged
whatever their order and the history stays a handful of numbers however many rounds run.

A Flower ClientApp is ephemeral and a fresh ``PrivacyEngine`` is built every round, so the history
is written to ``Context.state[STATE_KEY]`` as a ``ConfigRecord`` of plain numbers (never a pickle)
and restored into the next round's engine: ε grows round by round instead of restarting (the
Flower Opacus example's gap; ``docs/privacy.md §4``). ``calibrate_noise`` picks σ for the whole planned run and
``check_budget`` refuses a round that would take ε past the target (:class:`BudgetExhausted`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, RecordDict

if TYPE_CHECKING:  # Opacus loads at the first accountant or calibration: never on a client without DP
    from privacy._opacus import IAccountant

STATE_KEY = "corolla.privacy-accountant"  # Context.state key of the accountant history
MECHANISMS = ("rdp", "prv")

HistoryEntry = tuple[float, float, int]  # (noise multiplier σ, sample rate q, steps)


class BudgetExhausted(RuntimeError):
    """The next round would take this client's ε past ``privacy.target-epsilon``; it refuses to train.

    Attributes
    ----------
    spent : float
        ε spent so far (at ``delta``).
    projected : float
        ε after the refused round.
    target : float
        The budget, ``privacy.target-epsilon``.
    delta : float
        δ the ε values are computed at.
    """

    def __init__(self, *, spent: float, projected: float, target: float, delta: float, steps: int) -> None:
        self.spent, self.projected, self.target, self.delta = spent, projected, target, delta
        super().__init__(
            f"privacy budget exhausted: this client has spent ε = {spent:.4g} (δ = {delta:.3g}); another round "
            f"of {steps} DP-SGD steps would bring it to ε = {projected:.4g} > `privacy.target-epsilon` = "
            f"{target:g}. The client refuses to train. The noise was calibrated for fewer participations "
            "than it has had; to train longer, start a new run with a larger `privacy.target-epsilon` "
            "or more planned rounds"
        )


def _check_mechanism(mechanism: str) -> None:
    if mechanism not in MECHANISMS:
        raise ValueError(f"`privacy.accountant` = {mechanism!r} is not an accountant; choose one of {list(MECHANISMS)}")


def merge_history(history: Iterable[Sequence[float]]) -> list[HistoryEntry]:
    """Merge entries with equal ``(σ, q)``, summing their steps (first-appearance order kept)."""
    merged: dict[tuple[float, float], int] = {}
    for noise, rate, steps in history:
        if int(steps) != steps or steps < 0:
            raise ValueError(f"accountant history has a step count {steps!r}; it must be a non-negative integer")
        key = (float(noise), float(rate))
        merged[key] = merged.get(key, 0) + int(steps)
    return [(noise, rate, steps) for (noise, rate), steps in merged.items() if steps > 0]


def make_accountant(mechanism: str, history: Iterable[Sequence[float]] = ()) -> IAccountant:
    """An Opacus accountant (``rdp`` or ``prv``) holding ``history`` (merged)."""
    _check_mechanism(mechanism)
    from privacy._opacus import create_accountant

    accountant = create_accountant(mechanism=mechanism)
    accountant.history = merge_history(history)
    return accountant


def epsilon_of(history: Iterable[Sequence[float]], *, mechanism: str, delta: float) -> float:
    """ε at ``delta`` after the steps in ``history`` (0 for an empty history)."""
    accountant = make_accountant(mechanism, history)
    if not accountant.history:
        return 0.0
    if any(noise == 0 for noise, _, _ in accountant.history):
        return math.inf  # a step without noise has no finite ε
    return float(accountant.get_epsilon(delta=delta))


def _numbers(record: ConfigRecord, key: str) -> list[float]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"Context.state[{STATE_KEY!r}] is malformed: {key!r} is {value!r}, expected a list of numbers")
    return [float(v) for v in value]


def load_history(state: RecordDict, *, mechanism: str) -> list[HistoryEntry]:
    """The history saved in ``state`` (a ``Context.state``), or ``[]`` before the first DP round.

    Raises
    ------
    ValueError
        If the saved history was kept by another accountant, or is malformed.
    """
    _check_mechanism(mechanism)
    if STATE_KEY not in state:
        return []
    record = state[STATE_KEY]
    if not isinstance(record, ConfigRecord):
        raise ValueError(f"Context.state[{STATE_KEY!r}] is a {type(record).__name__}, expected a ConfigRecord")
    saved = record.get("mechanism")
    if saved != mechanism:
        raise ValueError(
            f"this client's privacy history was kept by the {saved!r} accountant, but `privacy.accountant` = "
            f"{mechanism!r} now; ε cannot be composed across accountants, keep `privacy.accountant` = {saved!r}"
        )
    noises, rates, steps = (_numbers(record, k) for k in ("noise-multiplier", "sample-rate", "steps"))
    if not len(noises) == len(rates) == len(steps):
        raise ValueError(f"Context.state[{STATE_KEY!r}] is malformed: its lists differ in length")
    return merge_history(zip(noises, rates, steps, strict=True))


def save_history(state: RecordDict, history: Iterable[Sequence[float]], *, mechanism: str) -> None:
    """Write ``history`` (merged, as plain numbers) to ``state[STATE_KEY]``."""
    _check_mechanism(mechanism)
    merged = merge_history(history)
    if not merged:
        if STATE_KEY in state:
            del state[STATE_KEY]
        return
    state[STATE_KEY] = ConfigRecord(
        {
            "mechanism": mechanism,
            "noise-multiplier": [noise for noise, _, _ in merged],
            "sample-rate": [rate for _, rate, _ in merged],
            "steps": [steps for _, _, steps in merged],
        }
    )


def spent_epsilon(state: RecordDict, *, mechanism: str, delta: float) -> float:
    """ε spent so far by the client whose ``Context.state`` is ``state``."""
    return epsilon_of(load_history(state, mechanism=mechanism), mechanism=mechanism, delta=delta)


@lru_cache(maxsize=64)
def calibrate_noise(
    *, target_epsilon: float, delta: float, sample_rate: float, total_steps: int, mechanism: str
) -> float:
    """σ such that ``total_steps`` steps at sample rate ``q`` spend at most ``target_epsilon``.

    Opacus's binary search (``get_noise_multiplier``) returns the smallest σ found whose ε is within
    0.01 *below* the target, so ε(total_steps) ≤ target_epsilon. Deterministic in its arguments and
    cached per process (it takes about a second with RDP's fractional orders): every round of a run
    gets the same σ.
    """
    _check_mechanism(mechanism)
    if total_steps < 1 or not 0 < sample_rate <= 1:
        raise ValueError(f"calibration needs total_steps >= 1 and 0 < q <= 1, got {total_steps}, {sample_rate}")
    from privacy._opacus import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=total_steps,
                accountant=mechanism,
            )
        )
    except ValueError as exc:
        raise ValueError(
            f"`privacy.target-epsilon` = {target_epsilon:g} cannot be reached over {total_steps} steps at q = "
            f"{sample_rate:.3g}, δ = {delta:.3g} (Opacus: {exc}); raise the budget or plan fewer steps"
        ) from exc


def check_budget(
    history: Iterable[Sequence[float]],
    *,
    mechanism: str,
    delta: float,
    target_epsilon: float,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
) -> float:
    """ε after one more round of ``steps`` steps; raises :class:`BudgetExhausted` if it exceeds the target."""
    past = merge_history(history)
    projected = epsilon_of([*past, (noise_multiplier, sample_rate, steps)], mechanism=mechanism, delta=delta)
    if projected > target_epsilon * (1 + 1e-9):
        spent = epsilon_of(past, mechanism=mechanism, delta=delta)
        raise BudgetExhausted(spent=spent, projected=projected, target=target_epsilon, delta=delta, steps=steps)
    return projected
