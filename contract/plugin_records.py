"""Task-plugin records: a client's JSON report going up, the server's merged state coming down.

Both are a ``ConfigRecord`` holding one JSON string under ``"json"`` (Flower records carry scalars,
strings and lists, not nested dicts). They are metered like every other record. A report that is not
valid JSON (or nests too deeply to decode), not an object, or larger than :data:`MAX_REPORT_BYTES` is refused with a reason; the
reply's arrays are unaffected (the strategy still aggregates them).
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

REPORT = "report"  # RecordDict key of a train reply's plugin report (client -> server)
BROADCAST = "broadcast"  # RecordDict key of the merged plugin state (server -> client)
_FIELD = "json"
MAX_REPORT_BYTES = 4_000_000  # a report is a sketch (keywords, small bases), never a model


class ReportError(ValueError):
    """A plugin record that cannot be decoded."""


def encode_json_record(payload: dict[str, Any]) -> ConfigRecord:
    """``payload`` (a JSON-able dict) as a one-field ConfigRecord."""
    if not isinstance(payload, dict):
        raise TypeError(f"a plugin report/broadcast must be a dict, got {type(payload).__name__}")
    return ConfigRecord({_FIELD: json.dumps(payload, sort_keys=True, allow_nan=False)})


def decode_json_record(content: RecordDict, key: str) -> dict[str, Any] | None:
    """The dict stored under ``key`` in ``content``, or ``None`` when absent.

    Raises
    ------
    ReportError
        The record is not a ConfigRecord with one JSON object under ``"json"`` within the size limit.
    """
    if key not in content:
        return None
    record = content[key]
    text = record.get(_FIELD) if isinstance(record, ConfigRecord) else None
    if not isinstance(text, str):
        raise ReportError(f"`{key}` must be a ConfigRecord with a JSON string under `{_FIELD}`")
    if len(text) > MAX_REPORT_BYTES:
        raise ReportError(f"`{key}` is {len(text)} bytes; the limit is {MAX_REPORT_BYTES}")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ReportError(f"`{key}` is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ReportError(f"`{key}` nests too deeply to decode") from None
    if not isinstance(value, dict):
        raise ReportError(f"`{key}` must hold a JSON object, got {type(value).__name__}")
    return value


def _refuse_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (``encode_json_record`` never writes them): refuse them."""
    raise ReportError(f"the report holds the non-JSON number `{name}`")


def message_report(message: Message) -> dict[str, Any] | None:
    """The plugin report a reply carries (``None`` if it has none or is an error reply)."""
    if not message.has_content():
        return None
    return decode_json_record(message.content, REPORT)
