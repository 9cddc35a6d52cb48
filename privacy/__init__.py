"""Differential privacy for clients: DP-SGD with Opacus on the trainable adapter tensors.

Layout after Opacus's own separation (``docs/privacy.md §1``):

* ``config``: :class:`DPConfig`, the ``privacy.*`` settings;
* ``engine``: :func:`privatize`, the only caller of Opacus ``make_private``; returns one
  :class:`PrivateTraining`;
* ``accounting``: the accountant history in Flower's ``Context.state``, noise calibration and the
  budget check (:class:`BudgetExhausted`).

This package imports only ``adapters`` of Corolla's packages (import-linter contract), and
imports Opacus through ``privacy._opacus``, which undoes ``import opacus``'s ``logging.basicConfig``.
"""

from privacy.accounting import (
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
from privacy.config import DPConfig, DPConfigError
from privacy.engine import PrivateTraining, privatize, resolve_noise, sample_rate_for

__all__ = [
    "STATE_KEY",
    "BudgetExhausted",
    "DPConfig",
    "DPConfigError",
    "PrivateTraining",
    "calibrate_noise",
    "check_budget",
    "epsilon_of",
    "load_history",
    "merge_history",
    "privatize",
    "resolve_noise",
    "sample_rate_for",
    "save_history",
    "spent_epsilon",
]
