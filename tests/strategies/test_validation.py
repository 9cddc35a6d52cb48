"""Reply validation: every malformed reply yields a reason, good replies yield None."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from contract import ARRAYS, METRICS, NUM_EXAMPLES
from strategies.validation import Expected, MalformedReply, check_reply, expected_from_arrays
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
        (GOOD, 0, "must be positive"),
        (GOOD, -3, "must be positive"),
        (GOOD, 2.5, "must be an integer"),
        (GOOD, float("nan"), "must be an integer"),
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
        (RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: 1})}), "exactly one ArrayRecord, got 0"),
        (
            RecordDict({ARRAYS: to_record(GOOD), "more": to_record(GOOD), METRICS: MetricRecord({NUM_EXAMPLES: 1})}),
            "exactly one ArrayRecord, got 2",
        ),
        (RecordDict({ARRAYS: to_record(GOOD)}), "missing metrics record"),
        (
            RecordDict({ARRAYS: to_record(GOOD), METRICS: MetricRecord({NUM_EXAMPLES: 1}), "m2": MetricRecord()}),
            "exactly one MetricRecord",
        ),
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
