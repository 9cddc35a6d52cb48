"""Builders for hand-made instructions and replies (the one ``make_reply`` helper)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from contract import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES
from strategies.layout import LoraPair

from .fake_grid import set_task_identity


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """ArrayRecord from plain ndarrays."""
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Plain ndarrays from an ArrayRecord."""
    return {k: v.numpy() for k, v in record.items()}


def make_instruction(arrays: Mapping[str, np.ndarray], node_id: int, msg_id: str = "") -> Message:
    """A train instruction as the server would send it to ``node_id``."""
    set_task_identity()
    content = RecordDict({ARRAYS: to_record(arrays), CONFIG: ConfigRecord({"server-round": 1})})
    msg = Message(content, node_id, MessageType.TRAIN)
    msg.metadata.__dict__["_message_id"] = msg_id or f"ins-{node_id}"
    return msg


def make_reply(
    arrays: Mapping[str, np.ndarray] | None,
    num_examples: int | float | None = 10,
    metrics: Mapping[str, float | int] | None = None,
    *,
    node_id: int = 100,
    error: str | None = None,
    content: RecordDict | None = None,
) -> Message:
    """A train reply from ``node_id``; ``error`` makes an error reply, ``content`` overrides all."""
    instruction = make_instruction({}, node_id)
    if error is not None:
        return Message(Error(2, error), reply_to=instruction)
    if content is None:
        m: dict[str, float | int] = dict(metrics or {})
        if num_examples is not None:
            m[NUM_EXAMPLES] = num_examples
        content = RecordDict({METRICS: MetricRecord(m)})
        if arrays is not None:
            content[ARRAYS] = to_record(arrays)
    return Message(content, reply_to=instruction)


def lora_arrays(
    rng: np.random.Generator, modules: Mapping[str, tuple[int, int]], r: int, dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """Random LoRA factors per module ``name -> (m, n)``: ``A: (r, n)``, ``B: (m, r)``, plus a head."""
    out: dict[str, np.ndarray] = {}
    for name, (m, n) in modules.items():
        out[f"{name}.lora_A.weight"] = rng.standard_normal((r, n)).astype(dtype)
        out[f"{name}.lora_B.weight"] = rng.standard_normal((m, r)).astype(dtype)
    out["classifier.weight"] = rng.standard_normal((3, 4)).astype(dtype)
    return out


def lora_layout(modules: Mapping[str, tuple[int, int]], scale: float = 2.0) -> dict[str, LoraPair]:
    """Layout matching :func:`lora_arrays`."""
    return {
        name: LoraPair(f"{name}.lora_A.weight", f"{name}.lora_B.weight", scale) for name in modules
    }
