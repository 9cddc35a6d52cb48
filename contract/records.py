"""The message contract between the Corolla ServerApp and ClientApp.

Both sides import these names instead of spelling record keys by hand. A train instruction carries
``RecordDict({ARRAYS: ArrayRecord, CONFIG: ConfigRecord})``; a train reply MUST carry exactly one
``ArrayRecord`` (same keys, shapes and dtypes as sent) and exactly one ``MetricRecord`` holding a
positive integer ``NUM_EXAMPLES`` plus any metrics (see :func:`train_reply_content`).

Metric reductions
-----------------
Every metric has one reduction used when the server combines client metrics
(:func:`reduce_metrics`): loss-like values are averaged weighted by ``num-examples``, ``epsilon``
takes the max (the federation is only as private as its least private client), example and byte
counters are summed. Unknown metrics default to the weighted mean, like Flower's
``aggregate_metricrecords``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, cast

from flwr.app import (
    ArrayRecord,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)

from .base_delta import BASE_VERSION

# --- RecordDict keys ------------------------------------------------------------------------------
ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"

# --- ConfigRecord keys (server -> client) ---------------------------------------------------------
SERVER_ROUND = "server-round"  # injected by Flower's FedAvg.configure_train / configure_evaluate
ADAPTER_KIND = "adapter-kind"
"""The adapter kind (``lora``, ``ffa``, ``lora-sb``, ``abba``, ...) the server resolved for this run
(``adapter.name``, or the strategy's first kind when ``auto``); in every train and evaluate config
record, and clients build their model with exactly this kind (they never import strategies)."""
LEARNING_RATE = "learning-rate"
"""The AdamW learning rate of this round's local training, in every train config record: ``train.lr``,
or the strategy's recommended rate when it is ``auto`` (``StrategyInfo.learning_rate``,
``docs/algorithms.md §17``); clients never import strategies, so the server resolves it."""
# Strategy- or lead-owned train-config keys go here, so clients never spell them by hand.
EPSILON_SPENT = "privacy-epsilon-spent"
"""In every train instruction of a DP run: the ε this node last reported to the server (0.0 if it never
did). A node whose accountant history is below it refuses to train (``PRIVACY_HISTORY_MISSING``):
the history was lost, and training on would restart ε (``docs/privacy.md §11``). Always a float, so
the server can set each node's value after metering without changing a byte count."""

# --- Error codes of client replies (``Message(error=Error(code, reason))``) -------------------------
PRIVACY_BUDGET_EXHAUSTED = 4030  # DP client refuses to train: the round would exceed its ε budget
NODE_STATE_MISSING = 4031  # the node lacks the frozen factors or base version the message assumes: resend them
PRIVACY_HISTORY_MISSING = 4032  # DP client refuses to train: its accountant history is missing or older than the server's
NOT_TRAINED = frozenset({PRIVACY_BUDGET_EXHAUSTED, NODE_STATE_MISSING, PRIVACY_HISTORY_MISSING})
"""Error codes a client sends before any DP-SGD step: the round spent no ε on that node."""

# --- MetricRecord keys (client -> server, and aggregated server metrics) --------------------------
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"  # the replying client's data partition: the server orders replies by it
TRAIN_LOSS = "train_loss"
EVAL_LOSS = "eval_loss"
EPSILON = "epsilon"
CLIENTS = "clients"  # replies aggregated this round (server-side)
DROPPED = "dropped"  # replies dropped this round (server-side)
DEV_REL_PREFIX = "dev_rel/"  # FedIT deviation per module: f"dev_rel/{module}" (server-side)
DEV_REL_MEAN = "dev_rel_mean"

Reduction = Literal["weighted_mean", "max", "min", "sum"]

METRIC_REDUCTIONS: Mapping[str, Reduction] = {
    TRAIN_LOSS: "weighted_mean",
    EVAL_LOSS: "weighted_mean",
    EPSILON: "max",
    NUM_EXAMPLES: "sum",
    CLIENTS: "sum",
    DROPPED: "sum",
    PARTITION_ID: "max",  # an identifier, not a metric: the recorder drops it from round rows
    BASE_VERSION: "max",  # the base version nodes hold (strategies that change the base)
}
"""Exact metric name -> reduction."""

PREFIX_REDUCTIONS: Mapping[str, Reduction] = {"bytes_": "sum", "bytes-": "sum"}
"""Metric name prefix -> reduction, consulted when the exact name is not in the table."""

DEFAULT_REDUCTION: Reduction = "weighted_mean"


def reduction_for(name: str, overrides: Mapping[str, Reduction] | None = None) -> Reduction:
    """Return the reduction for a metric name (overrides, exact table, prefixes, default)."""
    if overrides and name in overrides:
        return overrides[name]
    if name in METRIC_REDUCTIONS:
        return METRIC_REDUCTIONS[name]
    for prefix, reduction in PREFIX_REDUCTIONS.items():
        if name.startswith(prefix):
            return reduction
    return DEFAULT_REDUCTION


def _metric_records(record: RecordDict | MetricRecord) -> list[MetricRecord]:
    if isinstance(record, MetricRecord):
        return [record]
    return list(record.metric_records.values())


def _reduce(values: list[float], weights: list[float], how: Reduction) -> float:
    if how in ("max", "min") and any(math.isnan(v) for v in values):
        return math.nan  # unknown, whatever the order: Python's max(nan, 3) is nan but max(3, nan) is 3
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    if how == "sum":
        return sum(values)
    total = sum(weights)
    if total <= 0:  # every holder reported zero examples: fall back to the plain mean
        return sum(values) / len(values)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total


def reduce_metrics(
    records: Sequence[RecordDict | MetricRecord],
    weighted_by_key: str = NUM_EXAMPLES,
    *,
    overrides: Mapping[str, Reduction] | None = None,
) -> MetricRecord:
    """Combine client metrics, each metric with its own reduction.

    Drop-in for FedAvg's ``train_metrics_aggr_fn`` / ``evaluate_metrics_aggr_fn``, which Flower
    1.42 calls as ``fn(list[RecordDict], weighted_by_key)``. Bare ``MetricRecord`` items are accepted
    too. All MetricRecords of one RecordDict are merged, as Flower's ``aggregate_metricrecords`` does.

    Parameters
    ----------
    records : Sequence[RecordDict | MetricRecord]
        One entry per client.
    weighted_by_key : str (default: "num-examples")
        Metric holding each client's weight for ``"weighted_mean"``. Unlike Flower's default it is
        kept in the output, summed (total examples).
    overrides : Mapping[str, Reduction] | None (default: None)
        Per-name reductions taking precedence over the table (bind with ``functools.partial``).

    Returns
    -------
    MetricRecord
        Each metric reduced over the clients that reported it; a weighted mean is renormalised over
        those clients. List-valued metrics are reduced element-wise. Sums of ints stay ints.

    A metric whose values do not line up (a scalar from one client and a list from another, lists
    of different lengths, a non-number) is left out of the result rather than raising: the round
    goes on (the server's reply validation refuses such replies before they get here,
    ``docs/trust.md §1``).

    Raises
    ------
    ValueError
        If a client lacks a scalar ``weighted_by_key``.
    """
    merged: list[dict[str, MetricRecordValues]] = []
    weights: list[float] = []
    for i, record in enumerate(records):
        metrics: dict[str, MetricRecordValues] = {}
        for metric_record in _metric_records(record):
            metrics.update(metric_record)
        weight = metrics.get(weighted_by_key)
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise ValueError(
                f"reply {i} has no scalar `{weighted_by_key}` metric; every client reply MUST "
                f"report it (see contract.train_reply_content)"
            )
        merged.append(metrics)
        weights.append(float(weight))

    out = MetricRecord()
    names = list(dict.fromkeys(name for metrics in merged for name in metrics))
    for name in names:
        holders = [(m[name], w) for m, w in zip(merged, weights, strict=True) if name in m]
        values = [v for v, _ in holders]
        ws = [w for _, w in holders]
        how = reduction_for(name, overrides)
        if all(isinstance(v, list) for v in values):
            lengths = {len(cast(list[float], v)) for v in values}
            if len(lengths) != 1 or not all(_is_number(x) for v in values for x in cast(list[float], v)):
                continue  # lists that do not line up: no reduction is defined
            columns = zip(*cast(list[list[float]], values), strict=True)
            out[name] = [_as_metric(_reduce(list(col), ws, how), col, how) for col in columns]
        elif all(_is_number(v) for v in values):
            scalars = cast(list[float], values)
            out[name] = _as_metric(_reduce(scalars, ws, how), scalars, how)
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_metric(value: float, inputs: Sequence[float], how: Reduction) -> int | float:
    """Keep ints for int sums/max/min; means are floats."""
    if how != "weighted_mean" and all(isinstance(v, int) for v in inputs):
        return int(value)
    return float(value)


def message_bytes(message: Message | RecordDict) -> int:
    """Payload bytes of a message: the sum of ``count_bytes()`` over its records.

    Works for instructions and replies alike. A message carrying an error has no content and
    counts 0. For arrays Flower counts the serialised npy bytes plus key lengths (no compression).
    """
    if isinstance(message, Message):
        if not message.has_content():
            return 0
        content = message.content
    else:
        content = message
    return sum(record.count_bytes() for record in content.values())


def train_reply_content(
    arrays: ArrayRecord,
    num_examples: int,
    metrics: Mapping[str, MetricRecordValues] | None = None,
) -> RecordDict:
    """Build the content of a train reply as the contract requires.

    Parameters
    ----------
    arrays : ArrayRecord
        Trained arrays; MUST have the keys, shapes and dtypes the server sent.
    num_examples : int
        Examples used for local training (> 0).
    metrics : Mapping[str, MetricRecordValues] | None (default: None)
        Extra metrics such as ``TRAIN_LOSS`` or ``EPSILON``.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
        raise ValueError(f"`{NUM_EXAMPLES}` must be a positive int, got {num_examples!r}")
    metric_record = MetricRecord({**(metrics or {}), NUM_EXAMPLES: num_examples})
    return RecordDict({ARRAYS: arrays, METRICS: metric_record})
