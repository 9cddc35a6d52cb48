"""The node-local channel between a ClientApp process and its node's warm worker: a Unix socket.

Frames are ``>QQ`` (header length, blob length), a JSON header and a safetensors blob
(``client.node_worker.codec``). The socket file is the worker's, mode 0600, so only the node's user
can connect; each side also checks the other's user id with ``SO_PEERCRED`` (the worker refuses
another user even if the file's mode was widened; the ClientApp refuses a socket another user
planted). A Unix socket cannot be reached from outside the node.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from flwr.app import Context, Error, Message, RecordDict

from client.node_worker import codec

WORKER_SOCKET = "worker-socket"
"""Node config key: the path of this node's worker socket (``--node-config "... worker-socket='...'"``)."""

_LENGTHS = struct.Struct(">QQ")
MAX_HEADER = 256 * 2**20  # JSON: record keys, metrics, SecAgg keys and shares (base64)
MAX_BLOB = 64 * 2**30  # the arrays: an adapter payload, or a full model's gradient estimate


class WorkerUnavailable(ConnectionError):
    """The worker cannot be reached or broke off (the ClientApp then works in its own process)."""


class WorkerRaised(RuntimeError):
    """The handler raised inside the worker: re-raised in the ClientApp as Flower expects."""


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a connected Unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def send_frame(sock: socket.socket, header: dict[str, Any], blob: bytes) -> None:
    """Write one frame."""
    data = codec.dumps(header)
    sock.sendall(_LENGTHS.pack(len(data), len(blob)) + data)
    if blob:
        sock.sendall(blob)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise EOFError(f"the peer closed the connection after {got} of {size} bytes")
        got += n
    return bytes(buffer)


def recv_frame(sock: socket.socket) -> tuple[Any, bytes]:
    """Read one frame; raises :class:`EOFError` on a closed connection, ``codec.CodecError`` on a bad one."""
    header_size, blob_size = _LENGTHS.unpack(_read_exact(sock, _LENGTHS.size))
    if header_size > MAX_HEADER or blob_size > MAX_BLOB:
        raise codec.CodecError(f"frame of {header_size} + {blob_size} bytes exceeds the limits ({MAX_HEADER}, {MAX_BLOB})")
    header = codec.loads(_read_exact(sock, header_size))
    return header, _read_exact(sock, blob_size) if blob_size else b""


@dataclass(frozen=True)
class WorkerReply:
    """What the worker answered for one message."""

    content: RecordDict | Error | None
    state: RecordDict
    raised: dict[str, str] | None

    def apply(self, message: Message, context: Context) -> Message:
        """Install the returned state in ``context`` and give the ClientApp's reply (or raise as the
        handler did, so Flower turns it into the same error reply)."""
        for key in list(context.state):
            del context.state[key]
        for key, record in self.state.items():
            context.state[key] = record
        if self.raised is not None:
            raise WorkerRaised(f"{self.raised['type']}: {self.raised['message']}")
        if isinstance(self.content, Error):
            return Message(error=self.content, reply_to=message)
        assert isinstance(self.content, RecordDict)
        return Message(content=self.content, reply_to=message)


def forward(path: str, message: Message, context: Context, *, connect_timeout: float = 10.0) -> WorkerReply:
    """Hand ``message`` and ``context`` to the worker at ``path``; wait for its answer.

    Raises
    ------
    WorkerUnavailable
        No worker listens at ``path``, it belongs to another user, or it broke off before answering.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise WorkerUnavailable(f"cannot connect to {path} ({exc.strerror or exc})") from exc
        owner = peer_uid(sock)
        if owner != os.getuid():
            raise WorkerUnavailable(f"{path} belongs to user id {owner}, not this node's user ({os.getuid()})")
        sock.settimeout(None)  # training takes as long as it takes
        header, blob = codec.encode_request(message, context)
        try:
            send_frame(sock, header, blob)
            reply_header, reply_blob = recv_frame(sock)
        except (OSError, EOFError) as exc:
            raise WorkerUnavailable(f"the worker at {path} broke off ({exc})") from exc
        content, state, raised = codec.decode_reply(reply_header, reply_blob)
        return WorkerReply(content, state, raised)
    finally:
        sock.close()
