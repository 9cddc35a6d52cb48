"""privacy.accounting: the accountant history across rounds in Context.state, calibration, the budget."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, RecordDict

from privacy import (
    STATE_KEY,
    BudgetExhausted,
    calibrate_noise,
    check_budget,
    epsilon_of,
    load_history,
    merge_history,
    save_history,
    spent_epsilon,
)
from privacy._opacus import create_accountant
from privacy.accounting import make_accountant

Q, DELTA, STEPS = 0.05, 1e-5, 20
MECHANISMS = ["rdp", "prv"]


def _round(state: RecordDict, mechanism: str, *, noise: float, steps: int = STEPS, report: bool = True) -> float:
    """One client round the way the engine runs it: a fresh accountant restored from the state,
    one Opacus ``step`` per optimizer step, saved back; returns ε after the round."""
    accountant = make_accountant(mechanism, load_history(state, mechanism=mechanism))
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=Q)
    save_history(state, accountant.history, mechanism=mechanism)
    return spent_epsilon(state, mechanism=mechanism, delta=DELTA) if report else math.nan


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_restored_rounds_equal_one_accountant_that_saw_every_step(mechanism: str) -> None:
    # Prepare: two rounds with a save/restore through a RecordDict in between, the second round at
    # another σ (so the history has two entries)
    state = RecordDict()
    _round(state, mechanism, noise=1.0)
    restored = _round(state, mechanism, noise=1.2)
    # Execute: one accountant that saw all 2 × STEPS steps
    direct = create_accountant(mechanism=mechanism)
    for noise in [1.0] * STEPS + [1.2] * STEPS:
        direct.step(noise_multiplier=noise, sample_rate=Q)
    # Assert
    assert load_history(state, mechanism=mechanism) == direct.history
    assert math.isclose(restored, direct.get_epsilon(delta=DELTA), rel_tol=0, abs_tol=1e-9)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_epsilon_is_monotone_over_rounds(mechanism: str) -> None:
    state = RecordDict()
    epsilons = [_round(state, mechanism, noise=1.0) for _ in range(4)]
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False)), epsilons
    assert epsilon_of([], mechanism=mechanism, delta=DELTA) == 0.0


def test_the_state_holds_plain_numbers_and_stays_bounded() -> None:
    state = RecordDict()
    for r in range(50):
        _round(state, "rdp", noise=1.0 if r % 2 else 0.9, steps=3, report=False)
    record = state[STATE_KEY]
    assert isinstance(record, ConfigRecord)
    assert record["mechanism"] == "rdp"
    assert record["noise-multiplier"] == [0.9, 1.0] and record["steps"] == [75, 75]
    assert all(isinstance(v, float) for v in record["sample-rate"])  # type: ignore[union-attr]
    assert all(isinstance(v, int) for v in record["steps"])  # type: ignore[union-attr]
    assert merge_history([(1.0, Q, 2), (1.1, Q, 1), (1.0, Q, 3), (1.0, 0.1, 0)]) == [(1.0, Q, 5), (1.1, Q, 1)]


def test_a_history_kept_by_another_accountant_is_refused() -> None:
    state = RecordDict()
    _round(state, "rdp", noise=1.0, steps=2)
    with pytest.raises(ValueError, match="keep `privacy.accountant` = 'rdp'"):
        load_history(state, mechanism="prv")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_calibrated_noise_spends_at_most_the_target_and_close_to_it(mechanism: str) -> None:
    total = 3 * STEPS  # three rounds of STEPS steps
    sigma = calibrate_noise(target_epsilon=3.0, delta=DELTA, sample_rate=Q, total_steps=total, mechanism=mechanism)
    spent = epsilon_of([(sigma, Q, total)], mechanism=mechanism, delta=DELTA)
    assert 3.0 - 0.02 <= spent <= 3.0
    assert epsilon_of([(sigma * 0.97, Q, total)], mechanism=mechanism, delta=DELTA) > 3.0  # not far off


def test_the_budget_check_refuses_the_round_that_would_exceed_it() -> None:
    sigma = calibrate_noise(target_epsilon=2.0, delta=DELTA, sample_rate=Q, total_steps=3 * STEPS, mechanism="rdp")
    history: list[tuple[float, float, int]] = []
    for _ in range(3):  # the planned rounds all fit
        projected = check_budget(history, mechanism="rdp", delta=DELTA, target_epsilon=2.0,
                                 noise_multiplier=sigma, sample_rate=Q, steps=STEPS)
        history.append((sigma, Q, STEPS))
        assert projected == pytest.approx(epsilon_of(history, mechanism="rdp", delta=DELTA), abs=1e-12)
    with pytest.raises(BudgetExhausted, match=r"`privacy.target-epsilon` = 2") as info:
        check_budget(history, mechanism="rdp", delta=DELTA, target_epsilon=2.0,
                     noise_multiplier=sigma, sample_rate=Q, steps=STEPS)
    assert info.value.spent <= 2.0 < info.value.projected and info.value.target == 2.0


def test_zero_noise_has_no_finite_epsilon() -> None:
    assert epsilon_of([(0.0, Q, 1)], mechanism="rdp", delta=DELTA) == math.inf
