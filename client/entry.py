"""The ClientApp Flower runs (``clientapp = "client.entry:app"``): hand each message to the node's warm
worker, or to the handlers of ``client.app`` in this process.

Flower's process isolation starts one ClientApp process per message. When the node config names a
worker socket (``worker-socket``, ``client.node_worker``), this module forwards the message and the
node's ``Context`` to that long-lived worker, which keeps the base model and the task data built, and
returns its reply and the updated ``Context.state``; the process then never imports torch or builds
anything. Without a worker, or when it cannot be reached (said once per node and run), the handlers
of ``client.app`` run here, as they always did. Both paths run the same handlers on the same
message and state, so they give the same replies (``docs/scaling.md §3``).

This module stays lean: Flower, the contract and the channel only; ``client.app`` (torch,
transformers, the tasks) is imported on the in-process path alone.
"""

from __future__ import annotations

from logging import WARNING

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from client.node_worker.channel import WORKER_SOCKET, WorkerUnavailable, forward
from contract import secagg as secagg_wire
from contract.frozen import GRADIENT_ESTIMATE
from contract.ranks import RANK_QUERY

MESSAGE_TYPES = ("train", "evaluate", GRADIENT_ESTIMATE, RANK_QUERY, *secagg_wire.STAGES)
"""Every message type ``client.app.app`` handles (a test keeps the two in step)."""

FALLBACK_STATE = "node-worker"  # Context.state record noting that the fallback was announced this run

app = ClientApp()


def _in_process(msg: Message, context: Context) -> Message:
    from client.app import app as local_app  # noqa: PLC0415 - torch and the tasks only on this path

    return local_app(msg, context)


def _announce_fallback(path: str, reason: str, context: Context) -> None:
    """Say once per node and run that the worker is unreachable and the work happens here."""
    if FALLBACK_STATE in context.state.config_records:
        return
    log(WARNING, "node worker at %s is unavailable (%s): this node works in its own ClientApp processes, "
        "building the model for every message; start `python -m client.node_worker --socket %s`", path, reason, path)
    context.state[FALLBACK_STATE] = ConfigRecord({"fallback-announced": path})


def handle(msg: Message, context: Context) -> Message:
    """Forward to the node's worker if one is configured and reachable, else handle in this process."""
    path = context.node_config.get(WORKER_SOCKET)
    if path:
        try:
            reply = forward(str(path), msg, context)
        except WorkerUnavailable as exc:
            _announce_fallback(str(path), str(exc), context)
        else:
            return reply.apply(msg, context)
    return _in_process(msg, context)


for _type in MESSAGE_TYPES:
    _category, _, _action = _type.partition(".")
    {"train": app.train, "evaluate": app.evaluate, "query": app.query}[_category](_action or "default")(handle)
