"""In-process fake Flower ``Grid`` for fast server-side tests (no Ray, no SuperLink).

``FakeGrid(handler, num_nodes)`` delivers each message to ``handler(message, context)`` - a plain
function or a ``flwr.clientapp.ClientApp`` instance - with one persistent ``Context`` per node
(``node_config = {"partition-id": i, "num-partitions": N}``, ``state`` kept across rounds).
Messages are deep-copied both ways as a stand-in for serialisation, so neither side can mutate the
other's arrays; the wire format itself is not exercised. A handler that raises produces an error
reply, as Flower's runtime does.
"""

from __future__ import annotations

import copy
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

Handler = Callable[[Message, Context], Message]

SERVER_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID
CLIENT_APP_RAISED_EXCEPTION = 2  # flwr.common.constant.ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def set_task_identity(run_id: int = 1, node_id: int = SERVER_NODE_ID, task_id: int = 1) -> None:
    """Compat shim: ``Message(...)`` reads run/node/task ids from Flower's process-global identity.

    ``flwr.supercore.task_identity`` is internal API (flwr 1.42); keep every use of it here.
    """
    from flwr.supercore.task_identity import TaskIdentity  # noqa: PLC0415 - internal API

    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


class FakeGrid(Grid):
    """A synchronous in-process Grid.

    Parameters
    ----------
    handler : Callable[[Message, Context], Message]
        Client logic; a ``ClientApp`` instance qualifies.
    num_nodes : int
        Number of client nodes; node ids are ``first_node_id + i`` for partition ``i``.
    run_config : Mapping[str, Any] | None (default: None)
        Copied into every node's ``context.run_config``.
    run_id : int (default: 1)
    first_node_id : int (default: 100)
    state_dir : str | None (default: None)
        Every node's ``state-dir`` node-config key (where a DP node keeps its accountant history,
        ``client.privacy_history``); ``None``: a fresh temporary folder per grid, so runs never
        see each other's histories (they all have run id 1).

    Attributes
    ----------
    contexts : dict[int, Context]
        Per node, persistent across rounds.
    log : list[tuple[Message, Message]]
        Every (instruction, reply) pair delivered, in order; instructions are snapshots taken at
        delivery (FedAvg mutates the shared ConfigRecord in place every round).
    """

    def __init__(
        self,
        handler: Handler,
        num_nodes: int,
        run_config: Mapping[str, Any] | None = None,
        *,
        run_id: int = 1,
        first_node_id: int = 100,
        state_dir: str | None = None,
    ) -> None:
        set_task_identity(run_id=run_id)
        self.handler = handler
        self.run_id = run_id
        self.node_ids = [first_node_id + i for i in range(num_nodes)]
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="corolla-node-state-")
        self.contexts = {
            node_id: Context(
                run_id=run_id,
                node_id=node_id,
                node_config={"partition-id": i, "num-partitions": num_nodes, "state-dir": self.state_dir},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i, node_id in enumerate(self.node_ids)
        }
        self.log: list[tuple[Message, Message]] = []
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        """Nothing to do: the run is fixed at construction."""

    @property
    def run(self) -> Any:
        """A minimal ``flwr.supercore.run.Run``."""
        from flwr.supercore.run import Run  # noqa: PLC0415

        return Run.create_empty(self.run_id)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Deprecated in Flower; kept for the ABC."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """All client node ids."""
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message at once and keep its reply until pulled."""
        ids: list[str] = []
        for msg in messages:
            msg_id = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id  # as Flower's InMemoryGrid does
            node_id = msg.metadata.dst_node_id
            if node_id not in self.contexts:
                raise KeyError(f"message to unknown node {node_id}; nodes are {self.node_ids}")
            delivered = copy.deepcopy(msg)
            try:
                reply = self.handler(delivered, self.contexts[node_id])
            except Exception as exc:  # noqa: BLE001 - mirror Flower: the exception becomes an error reply
                reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                reply = Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=delivered)
            if reply.metadata.reply_to_message_id != msg_id:
                raise ValueError("handler reply was not built with Message(..., reply_to=message)")
            reply = copy.deepcopy(reply)
            self.log.append((copy.deepcopy(msg), reply))  # snapshot: Flower reuses config records
            self._replies[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return (and forget) the replies to these message ids."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull every reply (the fake never times out)."""
        return self.pull_messages(self.push_messages(messages))
