"""What a DP run's ε covers, stated in the log and in ``summary.json``: no silent gaps.

Clients report ε for their DP-SGD steps (``privacy/``); the server records the max over clients per
round. ε covers those steps and whatever is computed from their (noised) result alone, the sent
update; ``privacy.not_covered`` lists every other channel through which a client's training data
reaches the server in the chosen set-up (``docs/privacy.md §8``), from four sources:

- **the platform**: every train reply carries the round's training loss and the client's exact
  ``num-examples`` (and its ε, which depends on ``n`` through the sample rate), none of them noised;
  under SecAgg+ the server learns only their sums;
- **the accounting itself**: ``privacy.poisson-sampling = false`` trains on fixed-size shuffled
  batches while the accountants assume Poisson sampling, so the reported ε is an estimate, not a bound;
- **the adapter kind's set-up** (``AdapterKind.privacy_gaps``): Fed-SB's federated set-up uploads
  raw gradients once (arXiv 2502.15436; ``docs/algorithms.md §9.2``); its server set-up draws a
  calibration sample from the task's training pool;
- **the task** (``Task.privacy_gaps``): reports and shard metrics built from training rows. A task
  may refuse a combination instead (GUIDEQ's verbatim lexicon with DP is refused), and a task that
  sends a report or shard metrics without declaring what they hold is listed as not covered.

:func:`not_covered` is cheap (no model, no data): ``corolla config`` and ``corolla run`` call it too,
so a refused combination fails before anything starts.
"""

from __future__ import annotations

from logging import WARNING
from typing import Any

from flwr.common.logger import log

from adapters.kind_registry import get_adapter_kind
from client.tasks.base import Task
from contract import RunConfig
from contract.secagg import SecAggConfig

REPLY_METRICS_GAP = (
    "train replies: each client's mean training loss of the round and its exact `num-examples` (and its ε, which "
    "depends on that number) travel without noise; they are computed from its training data"
)
SECAGG_METRICS_GAP = (
    "train replies under SecAgg+: the server learns the sums of the clients' training losses and `num-examples` "
    "(not each client's), without noise; each client's ε travels in plain text"
)
POISSON_GAP = (
    "`privacy.poisson-sampling = false`: batches are fixed-size and shuffled, but the accountant assumes Poisson "
    "sampling, so the reported ε is an estimate, not a proven bound; set `privacy.poisson-sampling = true` for one"
)


def not_covered(config: RunConfig, adapter_kind: str, task_class: type[Task]) -> list[str]:
    """Every channel that bypasses DP-SGD in this set-up, one sentence each (empty when DP is off).

    Raises
    ------
    contract.ConfigError
        The task refuses this combination (its message says why and the fix).
    """
    if not config.privacy.enabled:
        return []
    secagg = config.section(SecAggConfig).enabled
    gaps = [SECAGG_METRICS_GAP if secagg else REPLY_METRICS_GAP]
    if not config.privacy.poisson_sampling:
        gaps.append(POISSON_GAP)
    gaps += get_adapter_kind(adapter_kind).privacy_gaps(config)
    gaps += task_class.privacy_gaps(config)
    above_task = task_class.__mro__[: task_class.__mro__.index(Task)]  # the task's own classes and mixins
    if not any("privacy_gaps" in vars(klass) for klass in above_task):  # it declared nothing
        sends = [name for name, overridden in (("client_report", task_class.client_report is not Task.client_report),
                                               ("shard_metrics", task_class.shard_metrics is not Task.shard_metrics))
                 if overridden]
        if sends:
            gaps.append(
                f"task `{config.task.name}`: sends {' and '.join(sends)} without declaring what they hold "
                "(Task.privacy_gaps); treat them as computed from training data without noise"
            )
    return gaps


def privacy_statement(config: RunConfig, adapter_kind: str, task_class: type[Task]) -> dict[str, Any] | None:
    """The DP settings and what ε covers (``None`` when DP is off); logs each gap as a warning.

    Raises
    ------
    contract.ConfigError
        As :func:`not_covered`.
    """
    if not config.privacy.enabled:
        return None
    privacy = config.privacy
    gaps = not_covered(config, adapter_kind, task_class)
    for gap in gaps:
        log(WARNING, "DP does not cover: %s", gap)
    return {
        "mechanism": "DP-SGD (Opacus), per-example clipping of the trainable adapter tensors",
        "unit": "one training example of one client; ε composed over all of that client's rounds",
        "covers": "each client's DP-SGD steps and what is computed from its sent (noised) update alone",
        "accountant": privacy.accountant,
        "noise_multiplier": privacy.noise_multiplier or None,
        "target_epsilon": privacy.target_epsilon or None,
        "max_grad_norm": privacy.max_grad_norm,
        "delta": privacy.delta or "min(1e-5, 1/(10 n)) per client",
        "poisson_sampling": privacy.poisson_sampling,
        "not_covered": gaps,
    }
