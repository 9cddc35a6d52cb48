"""The warm worker's side of the channel: accept a ClientApp's message, run the handlers, answer.

One worker serves one node. It imports the handlers (torch, transformers, the tasks) once at start,
and ``client.worker``'s per-process cache keeps the base model and the task data built across
messages, exactly as a Ray simulation actor does; everything per client travels with each request
(the message and ``Context.state``) and goes back with the answer, so the worker holds no client
state. Requests are served one at a time (one model, one node).

Access: the socket is created mode 0600 (umask ``0o177`` around ``bind``) and every connection's
peer user id (``SO_PEERCRED``) must be ``allowed_uid`` (the worker's own user by default); another
user's connection is closed unanswered and logged.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.logger import log

from client.node_worker import codec
from client.node_worker.channel import WORKER_SOCKET, peer_uid, recv_frame, send_frame

Handler = Callable[[Message, Context], Message]
REQUEST_READ_TIMEOUT_S = 300.0  # a ClientApp that connects but never sends its request is dropped


def bind_private_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600. A stale socket file of this user is replaced;
    anything else at ``path`` is an error naming it."""
    if path.exists() or path.is_symlink():
        info = path.lstat()
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
            raise FileExistsError(f"{path} exists and is not this user's socket; remove it or choose another --socket")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


@dataclass
class NodeWorker:
    """Serves ``handler`` (the handlers' ClientApp, ``client.app.app``) on the socket at ``path``.

    ``status_file``, if given, is rewritten after every request with the worker's pid, the requests
    served, the connections refused and the model builds so far (``client.worker.BUILDS``).
    """

    path: Path
    handler: Handler
    allowed_uid: int = field(default_factory=os.getuid)
    status_file: Path | None = None
    requests: int = 0
    refused: int = 0
    _sock: socket.socket | None = None

    def start(self) -> None:
        """Bind the socket (call before :meth:`serve`)."""
        self._sock = bind_private_socket(self.path)
        self._write_status()
        log(INFO, "node worker %d listening on %s (mode 0600, user id %d)", os.getpid(), self.path, self.allowed_uid)

    def serve(self, *, max_requests: int | None = None) -> None:
        """Accept connections until closed (or ``max_requests`` connections answered or refused)."""
        listener = self._sock
        assert listener is not None, "call start() first"
        while max_requests is None or self.requests + self.refused < max_requests:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed by close()
                return
            with conn:
                self.serve_connection(conn)

    def serve_connection(self, conn: socket.socket) -> None:
        """Check the peer, read one request, run it, answer."""
        uid = peer_uid(conn)
        if uid != self.allowed_uid:
            self.refused += 1
            log(WARNING, "node worker: refused a connection from user id %d (only %d may connect)", uid, self.allowed_uid)
            self._write_status()
            return
        conn.settimeout(REQUEST_READ_TIMEOUT_S)
        try:
            header, blob = recv_frame(conn)
        except (OSError, EOFError, codec.CodecError) as exc:
            log(WARNING, "node worker: dropped a request that could not be read (%s)", exc)
            return
        conn.settimeout(None)
        started = time.perf_counter()
        answer = self.run(header, blob)
        try:
            send_frame(conn, *answer)
        except OSError as exc:
            log(WARNING, "node worker: the ClientApp left before the answer (%s)", exc)
        self.requests += 1
        self._write_status()
        log(INFO, "node worker: request %d answered in %.2f s", self.requests, time.perf_counter() - started)

    def run(self, header: object, blob: bytes) -> tuple[dict[str, object], bytes]:
        """Decode a request, run the handler, encode the answer (a bad request is answered as raised)."""
        try:
            message, context = codec.decode_request(header, blob)
        except codec.CodecError as exc:
            return {"state": [], "raised": {"type": "CodecError", "message": str(exc)}}, b""
        # the handlers run here: the node config must not send them back to this worker
        context.node_config.pop(WORKER_SOCKET, None)
        try:
            reply = self.handler(message, context)
        except Exception as exc:  # noqa: BLE001 - the ClientApp re-raises it, as Flower would have seen it
            return codec.encode_reply(None, context.state, raised=exc)
        return codec.encode_reply(reply, context.state)

    def close(self) -> None:
        """Stop accepting and remove the socket file."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        self.path.unlink(missing_ok=True)

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        from client.worker import BUILDS  # noqa: PLC0415 - the counter of the handlers' worker cache

        status = {"pid": os.getpid(), "socket": str(self.path), "requests": self.requests, "refused": self.refused,
                  "model_builds": BUILDS.count}
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_file)
