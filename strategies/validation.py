"""Reply validation: decide whether one client's reply may enter the aggregate.

A reply is checked against what the server sent (keys, shapes, dtypes), so one broken or hostile
client is dropped with a reason instead of crashing the round (Flower's
``validate_message_reply_consistency`` raises ``InconsistentMessageReplies`` for the whole round) or
silently poisoning the mean with NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from contract.records import EPSILON, NUM_EXAMPLES

Expected = dict[str, tuple[tuple[int, ...], np.dtype]]
"""Array key -> (shape, dtype) a reply must reproduce."""


class MalformedReply(ValueError):
    """A reply that cannot be aggregated; the message says why."""


def expected_from_arrays(arrays: ArrayRecord) -> Expected:
    """Record each array's shape and dtype, in the record's key order."""
    return {key: (tuple(arr.shape), np.dtype(arr.dtype)) for key, arr in arrays.items()}


def check_metrics(content: RecordDict, weighted_by_key: str = NUM_EXAMPLES) -> int:
    """Check the reply's single MetricRecord and return its example count.

    Raises
    ------
    MalformedReply
        If there is not exactly one MetricRecord, or ``weighted_by_key`` is missing, not an
        integer (an integral float such as ``3.0`` is accepted) or not positive.
    """
    metric_records = list(content.metric_records.values())
    if not metric_records:
        raise MalformedReply("missing metrics record (expected exactly one MetricRecord)")
    if len(metric_records) > 1:
        names = sorted(content.metric_records.keys())
        raise MalformedReply(f"expected exactly one MetricRecord, got {len(names)}: {names}")
    metrics = metric_records[0]
    if weighted_by_key not in metrics:
        raise MalformedReply(f"missing `{weighted_by_key}` in the MetricRecord")
    value = metrics[weighted_by_key]
    if isinstance(value, list):
        raise MalformedReply(f"`{weighted_by_key}` must be a scalar, got a list")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise MalformedReply(f"`{weighted_by_key}` must be an integer, got {value!r}")
    if value <= 0:
        raise MalformedReply(f"`{weighted_by_key}` must be positive, got {value!r}")
    check_epsilon(metrics.get(EPSILON))
    return int(value)


def check_epsilon(value: object) -> None:
    """A reported ``epsilon`` must be one finite number ``>= 0`` (``docs/privacy.md §7``): a NaN, an
    infinity, a negative value or a list cannot be a privacy loss, and the reply is dropped (the
    server then bounds that node's ε itself, ``docs/privacy.md §10``). ``None``: not reported."""
    if value is None:
        return
    if isinstance(value, list) or isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedReply(f"`{EPSILON}` must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise MalformedReply(f"`{EPSILON}` must be a finite number >= 0, got {value!r}")


def check_reply(
    content: RecordDict, expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    *, weighted_by_key: str = NUM_EXAMPLES,
) -> tuple[dict[str, np.ndarray], int]:
    """Parse a train reply, raising :class:`MalformedReply` unless it matches ``expected``.

    Checks, in order: exactly one ArrayRecord; no missing or extra keys; each array decodes and has
    the expected shape and dtype; floating-point arrays are all finite; then :func:`check_metrics`.
    The decoded arrays are checked, not only the ``Array`` header, so a header that lies is caught.

    Returns
    -------
    tuple[dict[str, np.ndarray], int]
        The decoded arrays in ``expected``'s key order, and the example count.
    """
    array_records = list(content.array_records.values())
    if len(array_records) != 1:
        raise MalformedReply(f"expected exactly one ArrayRecord, got {len(array_records)}")
    record = array_records[0]
    missing = [k for k in expected if k not in record]
    extra = [k for k in record if k not in expected]
    if missing or extra:
        raise MalformedReply(f"array keys differ from those sent: missing {missing}, extra {extra}")
    decoded: dict[str, np.ndarray] = {}
    for key, (shape, dtype) in expected.items():
        try:
            arr = record[key].numpy()
        except Exception as exc:  # noqa: BLE001 - any decode failure makes the reply unusable
            raise MalformedReply(f"array `{key}` cannot be decoded: {exc}") from exc
        if tuple(arr.shape) != tuple(shape):
            raise MalformedReply(f"array `{key}` has shape {tuple(arr.shape)}, expected {tuple(shape)}")
        if arr.dtype != np.dtype(dtype):
            raise MalformedReply(f"array `{key}` has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise MalformedReply(f"array `{key}` has {bad} non-finite values (NaN/inf)")
        decoded[key] = arr
    return decoded, check_metrics(content, weighted_by_key)
