"""A node that lacks state the server's message assumes it holds, and the reply that says so.

Frozen adapter factors (FFA-LoRA's A, Fed-SB's B and A) are sent to a node once; a FedEx-LoRA or
FLoRA node is sent only the base delta from the version it last reported. Both live in the node's
``Context.state``, which a SuperNode restart empties (Flower 1.42 keeps it in memory). Such a node
raises :class:`NodeStateMissing` before it trains and replies with error code
``NODE_STATE_MISSING``; the server's round driver asks the strategy for a message carrying the
whole state and resends it within the same round (``docs/privacy.md §11``, ``docs/algorithms.md
§9.3``), so the run goes on as if the node had never restarted.
"""

from __future__ import annotations

from logging import WARNING

from flwr.app import Error, Message
from flwr.common.logger import log

from contract import NODE_STATE_MISSING


class NodeStateMissing(RuntimeError):
    """The message assumes state (frozen factors, a base version) that this node does not hold."""


def state_missing_reply(msg: Message, exc: NodeStateMissing) -> Message:
    """The error reply asking the server to resend the state (nothing was trained or committed)."""
    log(WARNING, "%s; asking the server to resend it", exc)
    return Message(error=Error(code=NODE_STATE_MISSING, reason=str(exc)), reply_to=msg)
