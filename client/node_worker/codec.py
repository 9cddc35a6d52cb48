"""Messages and node state as bytes without pickle: a JSON header plus one safetensors blob.

What crosses the node-local channel (``client.node_worker.channel``) is a Flower message's metadata
and content, the node's ``Context`` (its ``node_config``, ``run_config`` and ``state``) and, back,
the reply's content or error and the updated ``state``. Records map to JSON as follows:

* ``ArrayRecord``: each array goes into the safetensors blob under a generated name; the header keeps
  the record key, the array keys in order and each tensor's name (keys may hold any character);
* ``MetricRecord``: ``[key, value]`` pairs; JSON keeps ``int`` and ``float`` apart (NaN and
  infinities use Python's JSON extensions);
* ``ConfigRecord``: the same, with ``bytes`` (SecAgg keys and shares) as ``{"b64": ...}``.

Decoding validates the structure and raises :class:`CodecError` naming what is wrong, so a
malformed frame is a clear error, never code execution (safetensors and JSON cannot carry code).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, Metadata, MetricRecord, RecordDict
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

METADATA_FIELDS = ("run_id", "message_id", "src_node_id", "dst_node_id", "reply_to_message_id", "group_id",
                   "created_at", "ttl", "message_type", "src_task_id", "dst_task_id")


class CodecError(ValueError):
    """A frame that does not decode to a message, a record or a context (the message says which part)."""


class _Tensors:
    """Collects the arrays of one frame under generated names."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, array: np.ndarray) -> str:
        name = f"t{len(self.arrays)}"
        self.arrays[name] = np.ascontiguousarray(array)
        return name

    def blob(self) -> bytes:
        return save_tensors(self.arrays) if self.arrays else b""


def _config_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_config_value(v) for v in value]
    return value


def _config_value_back(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise CodecError(f"{where}: an object value must be {{\"b64\": <base64 bytes>}}")
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, list):
        return [_config_value_back(v, where) for v in value]
    if value is None:
        raise CodecError(f"{where}: null is not a config value")
    return value


def encode_recorddict(records: RecordDict, tensors: _Tensors) -> list[dict[str, Any]]:
    """``records`` as JSON-ready entries; its arrays go to ``tensors``."""
    out: list[dict[str, Any]] = []
    for key, record in records.items():
        if isinstance(record, ArrayRecord):
            out.append({"key": key, "kind": "arrays",
                        "items": [[name, tensors.add(array.numpy())] for name, array in record.items()]})
        elif isinstance(record, MetricRecord):
            out.append({"key": key, "kind": "metrics", "items": [[k, v] for k, v in record.items()]})
        elif isinstance(record, ConfigRecord):
            out.append({"key": key, "kind": "config", "items": [[k, _config_value(v)] for k, v in record.items()]})
        else:
            raise CodecError(f"record `{key}` is a {type(record).__name__}, not an Array/Metric/ConfigRecord")
    return out


def decode_recorddict(entries: Any, tensors: Mapping[str, np.ndarray], where: str) -> RecordDict:
    """Inverse of :func:`encode_recorddict`."""
    if not isinstance(entries, list):
        raise CodecError(f"{where}: expected a list of records")
    records = RecordDict()
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("items"), list):
            raise CodecError(f"{where}: each record needs a string `key` and a list `items`")
        key, kind, items = entry["key"], entry.get("kind"), entry["items"]
        label = f"{where}[{key!r}]"
        if any(not (isinstance(i, list) and len(i) == 2 and isinstance(i[0], str)) for i in items):
            raise CodecError(f"{label}: items must be [key, value] pairs")
        try:
            if kind == "arrays":
                missing = [name for _, name in items if name not in tensors]
                if missing:
                    raise CodecError(f"{label}: tensors {missing} are not in the blob")
                records[key] = ArrayRecord({k: Array(tensors[name]) for k, name in items})
            elif kind == "metrics":
                records[key] = MetricRecord({k: v for k, v in items})
            elif kind == "config":
                records[key] = ConfigRecord({k: _config_value_back(v, label) for k, v in items})
            else:
                raise CodecError(f"{label}: unknown record kind {kind!r} (arrays, metrics, config)")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"{label}: {exc}") from exc
    return records


def _metadata(message: Message) -> dict[str, Any]:
    meta = message.metadata
    return {name: getattr(meta, name) for name in METADATA_FIELDS}


def encode_request(message: Message, context: Context) -> tuple[dict[str, Any], bytes]:
    """The header and blob the ClientApp sends: the message and everything its handler may read."""
    tensors = _Tensors()
    header = {
        "metadata": _metadata(message),
        "content": encode_recorddict(message.content, tensors),
        "context": {"run_id": context.run_id, "node_id": context.node_id, "node_config": dict(context.node_config),
                    "run_config": dict(context.run_config), "state": encode_recorddict(context.state, tensors)},
    }
    return header, tensors.blob()


def _tensors(blob: bytes) -> dict[str, np.ndarray]:
    if not blob:
        return {}
    try:
        return load_tensors(blob)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on bad input
        raise CodecError(f"the tensor blob is not valid safetensors ({exc})") from exc


def decode_request(header: Any, blob: bytes) -> tuple[Message, Context]:
    """Inverse of :func:`encode_request`: the message as the ClientApp received it, and its context."""
    if not isinstance(header, dict) or not {"metadata", "content", "context"} <= set(header):
        raise CodecError("a request needs `metadata`, `content` and `context`")
    tensors = _tensors(blob)
    meta, ctx = header["metadata"], header["context"]
    if not isinstance(meta, dict) or set(meta) != set(METADATA_FIELDS):
        raise CodecError(f"request metadata must have exactly the fields {', '.join(METADATA_FIELDS)}")
    if not isinstance(ctx, dict) or not {"run_id", "node_id", "node_config", "run_config", "state"} <= set(ctx):
        raise CodecError("request context needs run_id, node_id, node_config, run_config and state")
    try:
        metadata = Metadata(**meta)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"request metadata: {exc}") from exc
    content = decode_recorddict(header["content"], tensors, "content")
    # a received message: Flower's runtime builds it from its metadata the same way (make_message)
    message = Message(metadata=metadata, content=content)  # type: ignore[call-overload]
    context = Context(
        run_id=int(ctx["run_id"]), node_id=int(ctx["node_id"]), node_config=dict(ctx["node_config"]),
        state=decode_recorddict(ctx["state"], tensors, "state"), run_config=dict(ctx["run_config"]),
    )
    return message, context


def encode_reply(reply: Message | None, state: RecordDict, raised: BaseException | None = None) -> tuple[dict[str, Any], bytes]:
    """The worker's answer: the reply's content or error (or the exception the handler raised) and the
    node's state after the handler ran (a failing handler may have changed it too, e.g. SecAgg forgets)."""
    tensors = _Tensors()
    header: dict[str, Any] = {"state": encode_recorddict(state, tensors)}
    if raised is not None:
        header["raised"] = {"type": type(raised).__name__, "message": str(raised)}
    elif reply is not None and reply.has_error():
        header["error"] = {"code": int(reply.error.code), "reason": reply.error.reason or ""}
    elif reply is not None:
        header["content"] = encode_recorddict(reply.content, tensors)
    else:
        raise CodecError("a reply needs a message or an exception")
    return header, tensors.blob()


def decode_reply(header: Any, blob: bytes) -> tuple[RecordDict | Error | None, RecordDict, dict[str, str] | None]:
    """Inverse of :func:`encode_reply`: ``(content or Error or None, state, raised or None)``."""
    if not isinstance(header, dict) or "state" not in header:
        raise CodecError("a reply needs `state`")
    tensors = _tensors(blob)
    state = decode_recorddict(header["state"], tensors, "state")
    if "raised" in header:
        raised = header["raised"]
        if not isinstance(raised, dict) or not all(isinstance(raised.get(k), str) for k in ("type", "message")):
            raise CodecError("`raised` needs string `type` and `message`")
        return None, state, {"type": raised["type"], "message": raised["message"]}
    if "error" in header:
        error = header["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int) or not isinstance(error.get("reason"), str):
            raise CodecError("`error` needs an integer `code` and a string `reason`")
        return Error(code=error["code"], reason=error["reason"]), state, None
    if "content" in header:
        return decode_recorddict(header["content"], tensors, "reply content"), state, None
    raise CodecError("a reply needs `content`, `error` or `raised`")


def dumps(header: Mapping[str, Any]) -> bytes:
    """The header as UTF-8 JSON."""
    return json.dumps(header, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    """Parse a header; raises :class:`CodecError`."""
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"the header is not JSON ({exc})") from exc
