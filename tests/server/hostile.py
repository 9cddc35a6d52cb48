"""A federation with one hostile node, for the untrusted-reply suite (``docs/trust.md §6``).

The honest nodes run Corolla's real ClientApp. Their replies are recorded in a
:class:`ReplyCache` keyed by ``(node, message type, digest of the message content)`` the first time
(the baseline run) and replayed afterwards: a hostile run whose bad reply was dropped sends the
honest nodes exactly what the baseline sent them, so every honest reply is a cache hit, and a miss
(:attr:`Federation.misses`) means the bad reply changed what the honest clients received.

The hostile node answers with :func:`template_reply` - a well-formed reply that keeps the arrays it
received (a zero update) and reports what an honest node would - passed through a tamper function.
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client.app import app as client_app
from contract import ARRAYS, BASE_VERSION, CONFIG, METRICS, NUM_EXAMPLES, PARTITION_ID, TRAIN_LOSS
from contract.frozen import FROZEN_CONFIRMED, FROZEN_HASH

Tamper = Callable[[Message, RecordDict], RecordDict | Message]
"""``(instruction, well-formed reply content) -> the content (or whole reply) the hostile node sends``."""


def digest(content: RecordDict) -> str:
    """A stable hash of a message's content (arrays by their bytes, other records by their items)."""
    h = hashlib.sha256()
    for name in sorted(content):
        record = content[name]
        h.update(name.encode())
        if isinstance(record, ArrayRecord):
            for key in record:
                h.update(key.encode())
                h.update(record[key].data)
        else:
            h.update(repr(sorted(record.items())).encode())
    return h.hexdigest()


ReplyCache = dict[tuple[int, str, str], RecordDict | Error]


def template_reply(msg: Message, partition: int) -> RecordDict:
    """A well-formed reply to ``msg``: the arrays received, unchanged, and honest-looking metrics."""
    config = msg.content.config_records[CONFIG]
    metrics: dict[str, Any] = {NUM_EXAMPLES: 10, PARTITION_ID: partition}
    if BASE_VERSION in config:
        metrics[BASE_VERSION] = config[BASE_VERSION]
    if FROZEN_HASH in config:
        metrics[FROZEN_CONFIRMED] = 1
    if msg.metadata.message_type.startswith("train"):
        metrics[TRAIN_LOSS] = 1.0
        arrays = ArrayRecord({k: Array(v.numpy()) for k, v in msg.content.array_records[ARRAYS].items()})
        return RecordDict({ARRAYS: arrays, METRICS: MetricRecord(metrics)})
    metrics["eval_loss"] = 1.0
    return RecordDict({METRICS: MetricRecord(metrics)})


def error_reply(msg: Message, content: RecordDict) -> Message:
    """The baseline's hostile node: a client that failed (its reply carries no data)."""
    return Message(Error(2, "baseline: this node contributes nothing"), reply_to=msg)


@dataclass(frozen=True)
class Case:
    """One kind of bad reply: what the hostile node does to each message kind, and the rule it
    breaks (``code``: the drop reason counted in ``summary.json``; ``None`` for a bad report, which
    skips the report and keeps the reply). ``None`` tampers send the well-formed reply;
    :func:`error_reply` (the default for evaluate replies) sends nothing usable."""

    name: str
    code: str | None
    train: Tamper | None = None
    evaluate: Tamper | None = error_reply  # as in the baseline, unless the case is about evaluate replies
    gradient: Tamper | None = None


class Federation:
    """The FakeGrid handler: honest nodes replayed from ``cache`` (or run for real), hostile nodes by ``cases``.

    ``cases`` maps a hostile node id to its :class:`Case`; ``partitions`` maps it to the partition id
    its well-formed reply reports.
    """

    def __init__(self, cache: ReplyCache, cases: dict[int, Case], partitions: dict[int, int]) -> None:
        self.cache = cache
        self.cases = cases
        self.partitions = partitions
        self.misses: list[tuple[int, str, int]] = []

    def __call__(self, msg: Message, context: Context) -> Message:
        if context.node_id in self.cases:
            return self._hostile(msg, self.cases[context.node_id], self.partitions[context.node_id])
        key = (context.node_id, msg.metadata.message_type, digest(msg.content))
        if key not in self.cache:
            round_ = msg.content.config_records[CONFIG].get("server-round", 0)
            self.misses.append((context.node_id, msg.metadata.message_type, int(round_)))  # type: ignore[arg-type]
            reply = client_app(msg, context)  # type: ignore[operator]  # a ClientApp is callable on (msg, context)
            self.cache[key] = reply.content if reply.has_content() else reply.error
        cached = self.cache[key]
        if isinstance(cached, Error):
            return Message(copy.deepcopy(cached), reply_to=msg)
        return Message(copy.deepcopy(cached), reply_to=msg)

    def _hostile(self, msg: Message, case: Case, partition: int) -> Message:
        kind = msg.metadata.message_type
        if kind == "train.gradient_estimate":  # an honest node's estimate (same request, same shapes)
            honest = [c for (_, k, d), c in self.cache.items() if k == kind and d == digest(msg.content)]
            if not honest or isinstance(honest[0], Error):
                return Message(Error(2, "no honest gradient to tamper with"), reply_to=msg)
            tamper, content = case.gradient, copy.deepcopy(honest[0])
        else:
            tamper = case.evaluate if kind.startswith("evaluate") else case.train
            content = template_reply(msg, partition)
        out = content if tamper is None else tamper(msg, content)
        return out if isinstance(out, Message) else Message(out, reply_to=msg)


# --- building bad replies -----------------------------------------------------------------------------

def with_metrics(**changes: Any) -> Tamper:
    """Set (or, with ``None``, remove) metrics of the reply; keys use ``_`` for ``-``, ``__`` for ``_``."""

    def tamper(msg: Message, content: RecordDict) -> RecordDict:
        metrics = dict(content[METRICS])
        for name, value in changes.items():
            key = name.replace("__", "\0").replace("_", "-").replace("\0", "_")
            if value is None:
                metrics.pop(key, None)
            else:
                metrics[key] = value
        content[METRICS] = MetricRecord(metrics)
        return content

    return tamper


def first_array(change: Callable[[np.ndarray], Any]) -> Tamper:
    """Replace the reply's first array by ``change(array)`` (an ndarray or a ready ``Array``)."""

    def tamper(msg: Message, content: RecordDict) -> RecordDict:
        record = content[ARRAYS]
        key = next(iter(record))
        value = change(record[key].numpy())
        record[key] = value if isinstance(value, Array) else Array(np.asarray(value))
        return content

    return tamper


def lying_npy(shape: tuple[int, ...]) -> Callable[[np.ndarray], Array]:
    """An ``Array`` whose own header is right but whose npy bytes claim ``shape`` (and hold the real data)."""

    def build(array: np.ndarray) -> Array:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": array.dtype.str, "fortran_order": False, "shape": shape})
        return Array(dtype=str(array.dtype), shape=tuple(array.shape), stype="numpy.ndarray",
                     data=header.getvalue() + array.tobytes())

    return build


def records(change: Callable[[RecordDict], None]) -> Tamper:
    """Apply ``change`` to the reply's records in place."""

    def tamper(msg: Message, content: RecordDict) -> RecordDict:
        change(content)
        return content

    return tamper


def report(text: str | None = None, *, record: Any = None) -> Tamper:
    """Attach a plugin report: the JSON ``text`` in the contract's ConfigRecord, or any ``record``."""

    def tamper(msg: Message, content: RecordDict) -> RecordDict:
        content["report"] = record if record is not None else ConfigRecord({"json": text})
        return content

    return tamper
