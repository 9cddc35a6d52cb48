"""Reply validation: decide whether one client's reply may enter the aggregate (``docs/trust.md §1``).

A reply is checked completely before anything reads it: its records (names and types), every
metric against the run's :class:`~contract.reply_schema.MetricSchema` (declared keys, scalar values
of the declared type and range, ``num-examples`` under the cap), every array against what the
server sent - the ``Array`` header and the npy header inside its bytes *before* anything is
decoded, so a lying header allocates nothing - then finiteness and the update's L2 norm. One broken
or hostile client is dropped with a reason instead of crashing the round (Flower's
``validate_message_reply_consistency`` raises ``InconsistentMessageReplies`` for the whole round),
silently poisoning the mean with NaN, or overflowing a sum.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from contract.plugin_records import REPORT
from contract.records import ARRAYS, EPSILON, METRICS, NUM_EXAMPLES
from contract.reply_schema import DEFAULT_MAX_UPDATE_NORM, EPSILON_SPEC, MetricSchema, ReplyKind, ReplyMetricError

from .protocol import DroppedReply

Expected = dict[str, tuple[tuple[int, ...], np.dtype]]
"""Array key -> (shape, dtype) a reply must reproduce."""

_NUMPY_STYPE = "numpy.ndarray"  # flwr.common.constant.SType.NUMPY


class MalformedReply(ValueError):
    """A reply that cannot be aggregated; the message says why, ``code`` names the rule it broke
    (``summary.json``'s ``dropped.by_reason`` counts by it; ``docs/trust.md §3`` lists them)."""

    def __init__(self, reason: str, code: str = "malformed") -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class ReplyPolicy:
    """What the server accepts from a client: the declared metrics and the update-norm bound."""

    schema: MetricSchema = field(default_factory=MetricSchema.for_run)
    max_update_norm: float = DEFAULT_MAX_UPDATE_NORM


def expected_from_arrays(arrays: ArrayRecord) -> Expected:
    """Record each array's shape and dtype, in the record's key order."""
    return {key: (tuple(arr.shape), np.dtype(arr.dtype)) for key, arr in arrays.items()}


def check_records(content: RecordDict, reply: ReplyKind) -> None:
    """The reply holds exactly the records of its kind, each of the right type.

    A train reply: ``arrays`` (ArrayRecord), ``metrics`` (MetricRecord), optionally ``report``
    (ConfigRecord, the task plugin's); an evaluate reply: ``metrics`` alone.
    """
    allowed: dict[str, type] = {METRICS: MetricRecord}
    if reply == "train":
        allowed |= {ARRAYS: ArrayRecord, REPORT: ConfigRecord}
    for name, record in content.items():
        if name not in allowed:
            shown = name if len(name) <= 64 else name[:61] + "..."
            raise MalformedReply(f"unexpected record `{shown}` in a {reply} reply; allowed: {sorted(allowed)}", "records")
        if not isinstance(record, allowed[name]):
            raise MalformedReply(f"record `{name}` must be a {allowed[name].__name__}, got {type(record).__name__}", "records")
    required = [METRICS] if reply == "evaluate" else [ARRAYS, METRICS]
    missing = [name for name in required if name not in content]
    if missing:
        raise MalformedReply(f"missing record(s) {missing} in a {reply} reply", "records")


def check_metrics(
    content: RecordDict, weighted_by_key: str = NUM_EXAMPLES, *, schema: MetricSchema | None = None,
    reply: ReplyKind = "train",
) -> int:
    """Check the reply's ``metrics`` record against ``schema`` and return its example count.

    Raises
    ------
    MalformedReply
        No ``metrics`` MetricRecord, an undeclared key, a value that breaks its declaration, or a
        ``weighted_by_key`` that is missing, not a whole number, not positive or above the cap.
    """
    schema = schema or MetricSchema.for_run()
    if METRICS not in content.metric_records:
        names = sorted(content.metric_records)
        raise MalformedReply(f"missing MetricRecord `{METRICS}` (got {names[:5]})", "records")
    metrics = content.metric_records[METRICS]
    try:
        count = schema.check(metrics, reply)
    except ReplyMetricError as exc:
        raise MalformedReply(str(exc), exc.code) from None
    if weighted_by_key != NUM_EXAMPLES:  # a strategy weighting by another declared metric
        value = metrics.get(weighted_by_key)
        if isinstance(value, list) or not isinstance(value, int | float) or not float(value) > 0:
            raise MalformedReply(f"`{weighted_by_key}` must be a positive number, got {value!r}", "metric-range")
        return int(value)
    return count


def _npy_header(array: Array, key: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` from the npy header inside ``array.data``."""
    stream = io.BytesIO(array.data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy format version {version} is not accepted")
    except Exception as exc:  # noqa: BLE001 - any header problem makes the array unusable
        raise MalformedReply(f"array `{key}` has no valid npy header: {exc}", "array-header") from None
    return tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran), stream.tell()


def decode_array(array: object, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Decode one reply array, checking both headers against ``(shape, dtype)`` first.

    The Flower ``Array`` carries its own ``shape``/``dtype``/``stype`` and the npy bytes carry another
    header; both must say ``(shape, dtype)`` and the bytes must be exactly that long, or nothing is
    decoded (``np.load`` would allocate whatever the npy header claims before reading).
    """
    if not isinstance(array, Array):
        raise MalformedReply(f"array `{key}` is a {type(array).__name__}, not an Array", "array-header")
    if array.stype != _NUMPY_STYPE:
        raise MalformedReply(f"array `{key}` has serialisation type {array.stype!r}, expected {_NUMPY_STYPE!r}", "array-header")
    if tuple(array.shape) != tuple(shape):
        raise MalformedReply(f"array `{key}` has shape {tuple(array.shape)}, expected {tuple(shape)}", "array-header")
    if str(array.dtype) != str(np.dtype(dtype)):
        raise MalformedReply(f"array `{key}` has dtype {array.dtype}, expected {np.dtype(dtype)}", "array-header")
    npy_shape, npy_dtype, fortran, offset = _npy_header(array, key)
    if npy_shape != tuple(shape) or npy_dtype != np.dtype(dtype) or npy_dtype.hasobject:
        raise MalformedReply(
            f"array `{key}` holds npy data of shape {npy_shape} and dtype {npy_dtype}, expected {tuple(shape)} and {np.dtype(dtype)}",
            "array-header",
        )
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(array.data) - offset != size:
        raise MalformedReply(f"array `{key}` has {len(array.data) - offset} data bytes, its shape needs {size}", "array-header")
    flat = np.frombuffer(array.data, dtype=npy_dtype, count=int(np.prod(shape, dtype=np.int64)), offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def update_norm(arrays: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> float:
    """``‖reply − sent‖₂`` over every array, accumulated in float64; an array whose key was not sent,
    or was sent in another shape (a client at its own rank, ``adapter.ranks``), counts whole."""
    total = 0.0
    for key, value in arrays.items():
        reference = sent.get(key)
        delta = value.astype(np.float64)
        if reference is not None and reference.shape == value.shape:
            delta = delta - reference
        total += float(np.dot(delta.ravel(), delta.ravel()))
    return float(np.sqrt(total))


def check_epsilon(value: object) -> None:
    """A reported ``epsilon`` must be one finite number ``>= 0`` (``docs/privacy.md §7``): a NaN, an
    infinity, a negative value or a list cannot be a privacy loss, and the reply is dropped (the
    server then bounds that node's ε itself, ``docs/privacy.md §10``). ``None``: not reported. The
    rule is the schema's (``contract.reply_schema``), which :func:`check_metrics` applies to every
    reply of a DP run."""
    if value is None:
        return
    try:
        EPSILON_SPEC.check(EPSILON, value)  # type: ignore[arg-type]  # any value: the check refuses non-numbers
    except ReplyMetricError as exc:
        raise MalformedReply(str(exc), exc.code) from None


def check_reply(
    content: RecordDict,
    expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
    policy: ReplyPolicy | None = None,
    sent: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Parse a train reply, raising :class:`MalformedReply` unless every check passes.

    In order: the records (:func:`check_records`); the metrics (:func:`check_metrics`); no missing or
    extra array keys; each array's headers, then its bytes (:func:`decode_array`); floating-point
    arrays all finite; the update's L2 norm (against ``sent``, the arrays sent this round) at most
    ``policy.max_update_norm``.

    Returns
    -------
    tuple[dict[str, np.ndarray], int]
        The decoded arrays in ``expected``'s key order, and the example count.
    """
    policy = policy or ReplyPolicy()
    check_records(content, "train")
    count = check_metrics(content, weighted_by_key, schema=policy.schema, reply="train")
    record = content.array_records[ARRAYS]
    missing = [k for k in expected if k not in record]
    extra = [k for k in record if k not in expected]
    if missing or extra:
        raise MalformedReply(f"array keys differ from those sent: missing {missing[:5]}, extra {extra[:5]}", "array-keys")
    decoded: dict[str, np.ndarray] = {}
    for key, (shape, dtype) in expected.items():
        arr = decode_array(record[key], key, shape, dtype)
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise MalformedReply(f"array `{key}` has {bad} non-finite values (NaN/inf)", "array-non-finite")
        decoded[key] = arr
    norm = update_norm(decoded, sent or {})
    if not norm <= policy.max_update_norm:
        raise MalformedReply(
            f"update norm {norm:.4g} is above `validation.max-update-norm` = {policy.max_update_norm:g}", "update-norm"
        )
    return decoded, count


def accepted_replies(replies: Iterable[Message], dropped: Sequence[DroppedReply]) -> list[Message]:
    """The replies with content whose node is not in ``dropped`` (a strategy's ``last_dropped``)."""
    nodes = {drop.node_id for drop in dropped}
    return [r for r in replies if r.has_content() and r.metadata.src_node_id not in nodes]
