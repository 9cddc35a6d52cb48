"""ClientApp handlers for the four SecAgg+ message types, and their registration on a ClientApp.

:func:`register_secagg` is the one call a ClientApp makes: it routes each message type of
:mod:`contract.secagg` to its stage, with the app's own train handler doing the training inside
the collect stage.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client.secagg import stages
from client.secagg.masking import collect
from client.secagg.state import RoundSecrets
from contract import secagg as wire

Handler = Callable[[Message, Context], Message]


def _reply(msg: Message, record: ConfigRecord) -> Message:
    return Message(content=RecordDict({wire.SECAGG: record}), reply_to=msg)


def handle_setup(msg: Message, context: Context) -> Message:
    """Set-up: parameters in, public keys out."""
    return _reply(msg, stages.setup(msg.content.config_records[wire.SECAGG], context, msg.metadata.dst_node_id))


def handle_share_keys(msg: Message, context: Context) -> Message:
    """Share-keys: neighbours' public keys in, encrypted shares out."""
    return _reply(msg, stages.share_keys(msg.content.config_records[wire.SECAGG], context))


def handle_unmask(msg: Message, context: Context) -> Message:
    """Unmask: survivor lists in, shares out."""
    return _reply(msg, stages.unmask(msg.content.config_records[wire.SECAGG], context))


def forgetting(handler: Handler) -> Handler:
    """``handler``, but a node that fails a stage forgets the round's secrets before the error
    reply goes out (it takes no further part in the round)."""

    def guarded(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception:
            RoundSecrets.forget(context)
            raise

    guarded.__doc__ = handler.__doc__
    return guarded


def secagg_handlers(train: Handler) -> dict[str, Handler]:
    """Message type -> handler; ``train`` is the ClientApp's plain train handler."""

    def handle_collect(msg: Message, context: Context) -> Message:
        """Collect: train, reply with the masked vector only."""
        return collect(msg, context, train)

    handlers = {wire.SETUP: handle_setup, wire.SHARE_KEYS: handle_share_keys, wire.COLLECT: handle_collect,
                wire.UNMASK: handle_unmask}
    return {message_type: forgetting(handler) for message_type, handler in handlers.items()}


def register_secagg(app: ClientApp, train: Handler) -> None:
    """Register the SecAgg+ handlers on ``app`` (``query.secagg_*`` and ``train.secagg_collect``)."""
    decorators = {"query": app.query, "train": app.train}
    for message_type, handler in secagg_handlers(train).items():
        category, action = message_type.split(".")
        decorators[category](action)(handler)
