"""The node worker's frames: every record type Corolla sends survives the trip exactly, and a
malformed frame is a clear error (no pickle anywhere: JSON and safetensors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client.node_worker import codec
from tests.strategies.fake_grid import set_task_identity


def _records() -> RecordDict:
    rng = np.random.default_rng(0)
    return RecordDict({
        "arrays": ArrayRecord({"b.lora_B": Array(rng.normal(size=(8, 4)).astype(np.float32)),
                               "a/weird key \u00e9": Array(rng.integers(0, 9, size=(3,), dtype=np.int64)),
                               "packed": Array(rng.integers(0, 255, size=(5, 5), dtype=np.uint8)),
                               "empty": Array(np.zeros((0, 4), dtype=np.float64))}),
        "metrics": MetricRecord({"num-examples": 12, "train_loss": 0.25, "nan": float("nan"), "ints": [1, 2, 3],
                                 "floats": [0.5, -1.0]}),
        "config": ConfigRecord({"flag": True, "round": 3, "lr": 0.01, "name": "lora", "key": b"\x00\xffpem",
                                "keys": [b"a", b"\x01b"], "names": ["x", "y"], "ids": [7, 8]}),
    })


def _same(a: RecordDict, b: RecordDict) -> None:
    assert list(a) == list(b)
    for key in a:
        x, y = a[key], b[key]
        assert type(x) is type(y)
        assert list(x) == list(y)  # key order: the SecAgg vector layout depends on it
        for k in x:
            if isinstance(x, ArrayRecord):
                assert x[k].numpy().dtype == y[k].numpy().dtype and np.array_equal(x[k].numpy(), y[k].numpy())
            elif isinstance(x[k], float) and math.isnan(x[k]):
                assert math.isnan(y[k])
            else:
                assert x[k] == y[k] and type(x[k]) is type(y[k])


def _message(content: RecordDict) -> Message:
    set_task_identity(run_id=5, node_id=1)
    msg = Message(content, 1234, "train.secagg_collect", group_id="2")
    msg.metadata.__dict__["_message_id"] = "abc"  # as the SuperLink sets it
    return msg


def test_request_round_trip_keeps_every_record_value_and_the_metadata() -> None:
    content = _records()
    context = Context(run_id=5, node_id=1234, node_config={"partition-id": 1, "num-partitions": 2},
                      state=_records(), run_config={"model.name": "tiny-llama", "train.lr": 0.01, "secagg.enabled": True})
    header, blob = codec.encode_request(_message(content), context)
    msg, ctx = codec.decode_request(codec.loads(codec.dumps(header)), blob)
    _same(msg.content, content)
    _same(ctx.state, context.state)
    assert msg.metadata.message_type == "train.secagg_collect" and msg.metadata.dst_node_id == 1234
    assert msg.metadata.message_id == "abc" and msg.metadata.group_id == "2" and msg.metadata.run_id == 5
    assert ctx.node_config == context.node_config and ctx.run_config == context.run_config
    reply = Message(RecordDict({"metrics": MetricRecord({"x": 1})}), reply_to=msg)  # a handler can answer it
    assert reply.metadata.reply_to_message_id == "abc"


def test_reply_round_trip_for_content_error_and_exception() -> None:
    msg = _message(RecordDict())
    state = _records()
    out, back_state, raised = codec.decode_reply(*codec.encode_reply(Message(_records(), reply_to=msg), state))
    assert isinstance(out, RecordDict) and raised is None
    _same(out, _records())
    _same(back_state, state)
    out, _, raised = codec.decode_reply(*codec.encode_reply(Message(Error(4030, "budget"), reply_to=msg), state))
    assert isinstance(out, Error) and (out.code, out.reason) == (4030, "budget") and raised is None
    out, _, raised = codec.decode_reply(*codec.encode_reply(None, state, raised=KeyError("missing")))
    assert out is None and raised == {"type": "KeyError", "message": "'missing'"}


@pytest.mark.parametrize(
    ("header", "blob", "needle"),
    [
        ({"content": []}, b"", "needs `metadata`"),
        ({"metadata": {}, "content": [], "context": {}}, b"", "exactly the fields"),
        ({"state": [{"key": "a", "kind": "arrays", "items": [["w", "t9"]]}], "content": []}, b"", "not in the blob"),
        ({"state": [{"key": "a", "kind": "pickle", "items": []}], "content": []}, b"", "unknown record kind"),
        ({"state": [{"key": "c", "kind": "config", "items": [["k", {"b64": "@@"}]]}], "content": []}, b"", "state"),
        ({"state": [{"key": "c", "kind": "config", "items": [["k", {"py": "os.system"}]]}], "content": []}, b"", "b64"),
        ({"state": [], "content": []}, b"\x00\x01garbage", "not valid safetensors"),
        ({"state": [], "error": {"code": "x", "reason": 1}}, b"", "integer `code`"),
    ],
)
def test_malformed_frames_are_named_errors(header: dict, blob: bytes, needle: str) -> None:
    decode = codec.decode_request if "metadata" in header or "context" in header or "state" not in header else codec.decode_reply
    with pytest.raises(codec.CodecError, match=needle):
        decode(header, blob)


def test_a_header_that_is_not_json_is_a_codec_error() -> None:
    with pytest.raises(codec.CodecError, match="not JSON"):
        codec.loads(b"\x80\x04pickle")
