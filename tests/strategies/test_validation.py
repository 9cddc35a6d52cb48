"""Reply validation: every malformed reply yields a reason, good replies yield None."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, MetricRecord, RecordDict

from contract import ARRAYS, METRICS, NUM_EXAMPLES
from contract import EPSILON, PARTITION_ID, TRAIN_LOSS, MetricSchema, MetricSpec, ValidationConfig
from strategies.validation import Expected, MalformedReply, ReplyPolicy, check_reply, decode_array, expected_from_arrays
from tests.strategies.helpers import make_reply, to_record


def validate_reply(content: RecordDict, expected: Expected) -> str | None:
    """``None`` if :func:`check_reply` accepts the reply, else its reason."""
    try:
        check_reply(content, expected)
    except MalformedReply as exc:
        return str(exc)
    return None


GOOD = {"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.float32)}
EXPECTED = expected_from_arrays(to_record(GOOD))


def _with(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    out = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


def test_expected_from_arrays_records_shape_and_dtype() -> None:
    assert EXPECTED == {"a": ((2, 3), np.dtype("float32")), "b": ((4,), np.dtype("float32"))}


def test_good_reply_passes_and_is_decoded() -> None:
    content = make_reply(GOOD, 7).content
    assert validate_reply(content, EXPECTED) is None
    arrays, n = check_reply(content, EXPECTED)
    assert n == 7 and list(arrays) == ["a", "b"]
    np.testing.assert_array_equal(arrays["a"], GOOD["a"])


@pytest.mark.parametrize(
    ("arrays", "num_examples", "reason"),
    [
        (_with(a=np.ones((3, 2), np.float32)), 5, "shape (3, 2), expected (2, 3)"),
        (_with(a=np.ones((2, 3), np.float64)), 5, "dtype float64, expected float32"),
        (_with(b=np.array([0, np.nan, np.inf, 1], np.float32)), 5, "2 non-finite"),
        (_with(b=None), 5, "missing ['b']"),
        (_with(c=np.ones(1, np.float32)), 5, "extra ['c']"),
        (GOOD, None, "missing `num-examples`"),
        (GOOD, 0, "`num-examples` = 0 is below its minimum 1"),
        (GOOD, -3, "`num-examples` = -3 is below its minimum 1"),
        (GOOD, 2.5, "`num-examples` must be a whole number"),
        (GOOD, float("nan"), "`num-examples` is NaN"),
        (GOOD, float("inf"), "`num-examples` is inf"),
        (GOOD, 2**62, "above `validation.max-num-examples` = 10000000"),
    ],
)
def test_malformed_reply_reasons(arrays, num_examples, reason) -> None:  # type: ignore[no-untyped-def]
    got = validate_reply(make_reply(arrays, num_examples).content, EXPECTED)
    assert got is not None and reason in got


def test_integral_float_num_examples_is_accepted() -> None:
    assert validate_reply(make_reply(GOOD, 4.0).content, EXPECTED) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: 1})}), "missing record(s) ['arrays']"),
        (
            RecordDict({ARRAYS: to_record(GOOD), "more": to_record(GOOD), METRICS: MetricRecord({NUM_EXAMPLES: 1})}),
            "unexpected record `more`",
        ),
        (RecordDict({ARRAYS: to_record(GOOD)}), "missing record(s) ['metrics']"),
        (
            RecordDict({ARRAYS: to_record(GOOD), METRICS: MetricRecord({NUM_EXAMPLES: 1}), "m2": MetricRecord()}),
            "unexpected record `m2`",
        ),
        (RecordDict({ARRAYS: to_record(GOOD), "other": MetricRecord({NUM_EXAMPLES: 1})}), "unexpected record `other`"),
        (RecordDict({ARRAYS: to_record(GOOD), METRICS: ConfigRecord({NUM_EXAMPLES: 1})}), "must be a MetricRecord"),
        (RecordDict({ARRAYS: to_record(GOOD), METRICS: MetricRecord({NUM_EXAMPLES: [1, 2]})}), "scalar"),
    ],
)
def test_record_structure_reasons(content: RecordDict, reason: str) -> None:
    got = validate_reply(content, EXPECTED)
    assert got is not None and reason in got
    with pytest.raises(MalformedReply):
        check_reply(content, EXPECTED)


def test_lying_array_header_is_caught() -> None:
    record = to_record(GOOD)
    record["a"].shape = (3, 2)  # header says (3, 2); the npy bytes decode to (2, 3)
    content = RecordDict({ARRAYS: record, METRICS: MetricRecord({NUM_EXAMPLES: 1})})
    assert validate_reply(content, expected_from_arrays(record)) is not None


def _reply(metrics: dict, arrays: dict[str, np.ndarray] = GOOD) -> RecordDict:
    return RecordDict({ARRAYS: to_record(arrays), METRICS: MetricRecord({NUM_EXAMPLES: 3, **metrics})})


@pytest.mark.parametrize(
    ("metrics", "code", "reason"),
    [
        ({"round": 7}, "metric-undeclared", "metric `round` is not declared"),
        ({"eval_accuracy": 1.0}, "metric-undeclared", "`eval_accuracy` does not belong in a train reply"),
        ({TRAIN_LOSS: [1.0, 2.0]}, "metric-list", "`train_loss` must be a scalar float, got a list of 2"),
        ({TRAIN_LOSS: float("nan")}, "metric-non-finite", "`train_loss` is NaN"),
        ({TRAIN_LOSS: -1.0}, "metric-range", "below its minimum 0"),
        ({PARTITION_ID: float("nan")}, "metric-non-finite", "`partition-id` is NaN"),
        ({PARTITION_ID: [0, 1]}, "metric-list", "`partition-id` must be a scalar"),
        ({PARTITION_ID: 2**40}, "metric-range", "above its maximum"),
        ({EPSILON: float("inf")}, "metric-non-finite", "`epsilon` is inf"),
        ({EPSILON: -0.5}, "metric-range", "`epsilon` = -0.5 is below its minimum 0"),
    ],
)
def test_metric_schema_reasons_and_codes(metrics: dict, code: str, reason: str) -> None:
    with pytest.raises(MalformedReply, match=None) as info:
        check_reply(_reply(metrics), EXPECTED)
    assert reason in str(info.value) and info.value.code == code


def test_declared_extra_metric_passes_and_epsilon_is_refused_without_dp() -> None:
    extra = MetricSpec("my-metric", "float", 0, 1)
    policy = ReplyPolicy(schema=MetricSchema.for_run([extra]))
    check_reply(_reply({"my-metric": 0.5}), EXPECTED, policy=policy)
    with pytest.raises(MalformedReply, match="above its maximum 1"):
        check_reply(_reply({"my-metric": 1.5}), EXPECTED, policy=policy)
    no_dp = ReplyPolicy(schema=MetricSchema.for_run(privacy=False))
    with pytest.raises(MalformedReply, match="metric `epsilon` is not declared"):
        check_reply(_reply({EPSILON: 1.0}), EXPECTED, policy=no_dp)


def test_num_examples_cap_is_configurable() -> None:
    policy = ReplyPolicy(schema=MetricSchema.for_run(limits=ValidationConfig(max_num_examples=100)))
    check_reply(_reply({}) , EXPECTED, policy=policy)
    content = RecordDict({ARRAYS: to_record(GOOD), METRICS: MetricRecord({NUM_EXAMPLES: 101})})
    with pytest.raises(MalformedReply, match="`num-examples` = 101 is above `validation.max-num-examples` = 100") as info:
        check_reply(content, EXPECTED, policy=policy)
    assert info.value.code == "num-examples-cap"


def test_update_norm_is_measured_from_what_was_sent_in_float64() -> None:
    sent = {k: v.copy() for k, v in GOOD.items()}
    moved = {"a": GOOD["a"] + np.float32(3.0), "b": GOOD["b"].copy()}  # ‖Δ‖ = 3·√6
    policy = ReplyPolicy(max_update_norm=3.0 * np.sqrt(6.0) + 1e-6)
    check_reply(_reply({}, moved), EXPECTED, policy=policy, sent=sent)
    with pytest.raises(MalformedReply, match="update norm 7.348 is above") as info:
        check_reply(_reply({}, moved), EXPECTED, policy=ReplyPolicy(max_update_norm=7.0), sent=sent)
    assert info.value.code == "update-norm"
    huge = {"a": np.full((2, 3), 3e38, np.float32), "b": GOOD["b"]}  # finite, but sums of it overflow float32
    with pytest.raises(MalformedReply, match="update norm 7.348e\\+38 is above `validation.max-update-norm` = 1e\\+06"):
        check_reply(_reply({}, huge), EXPECTED, sent=sent)


def _npy(shape: tuple[int, ...], dtype: str, payload: bytes) -> bytes:
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return header.getvalue() + payload


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=_npy((10**12,), "float32", b"\0" * 24)),
         "holds npy data of shape (1000000000000,)"),
        (Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=_npy((2, 3), "float32", b"\0" * 8)),
         "has 8 data bytes, its shape needs 24"),
        (Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=b"not npy at all"), "no valid npy header"),
        (Array(dtype="float32", shape=(2, 3), stype="torch.Tensor", data=b""), "serialisation type 'torch.Tensor'"),
        (Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=_npy((2, 3), "O", b"")), "dtype object"),
    ],
)
def test_headers_are_checked_before_anything_is_decoded(array: Array, reason: str) -> None:
    with pytest.raises(MalformedReply) as info:
        decode_array(array, "a", (2, 3), np.dtype("float32"))
    assert reason in str(info.value) and info.value.code == "array-header"


def test_decode_array_round_trips_c_and_fortran_order() -> None:
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    for arr in (value, np.asfortranarray(value)):
        np.testing.assert_array_equal(decode_array(Array(arr), "a", (2, 3), np.dtype("float32")), value)
