"""The node worker's socket: only the node's user may connect (file mode 0600 and a peer user id
check), the ClientApp gets the handler's reply and the updated ``Context.state`` back, a handler's
exception is re-raised in the ClientApp, and an absent worker means in-process work, said once."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

import client.entry as thin
from client.node_worker.channel import WORKER_SOCKET, WorkerRaised, WorkerUnavailable, forward
from client.node_worker.service import NodeWorker, bind_private_socket
from tests.strategies.fake_grid import set_task_identity

NOBODY = 65534


def _handler(msg: Message, context: Context) -> Message:
    """Counts calls in the state, echoes the config, raises on demand (after touching the state)."""
    calls = int(context.state.config_records["n"]["calls"]) + 1 if "n" in context.state.config_records else 1
    context.state["n"] = ConfigRecord({"calls": calls, "seen": bool(WORKER_SOCKET in context.node_config)})
    if msg.content.config_records["config"].get("fail"):
        raise ValueError("asked to fail")
    return Message(RecordDict({"metrics": MetricRecord({"calls": calls})}), reply_to=msg)


@pytest.fixture()
def worker(tmp_path: Path) -> Iterator[NodeWorker]:
    # a short path (Unix socket paths are limited to 107 bytes) in a folder every user may traverse,
    # so that only the socket's own mode and the peer check stand between another user and the worker
    folder = Path(tempfile.mkdtemp(prefix="corolla-nw-", dir="/tmp"))
    folder.chmod(0o755)
    node = NodeWorker(folder / "node.sock", _handler, status_file=tmp_path / "status.json")
    node.start()
    thread = threading.Thread(target=node.serve, daemon=True)
    thread.start()
    yield node
    node.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    shutil.rmtree(folder, ignore_errors=True)


def _message(fail: bool = False) -> Message:
    set_task_identity(run_id=3, node_id=1)
    msg = Message(RecordDict({"config": ConfigRecord({"fail": fail})}), 77, "train")
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def _context(path: Path) -> Context:
    return Context(run_id=3, node_id=77, node_config={"partition-id": 0, WORKER_SOCKET: str(path)},
                   state=RecordDict(), run_config={})


def test_the_socket_is_private_to_the_nodes_user(worker: NodeWorker) -> None:
    info = worker.path.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()


def test_replies_and_state_come_back_and_the_worker_never_forwards_again(worker: NodeWorker) -> None:
    context = _context(worker.path)
    for expected in (1, 2):
        msg = _message()
        reply = forward(str(worker.path), msg, context).apply(msg, context)
        assert reply.content.metric_records["metrics"]["calls"] == expected
        assert reply.metadata.reply_to_message_id == "m1"
    assert context.state.config_records["n"]["calls"] == 2  # the state lives in the Context, not the worker
    assert context.state.config_records["n"]["seen"] is False  # the worker strips its own socket key
    assert worker.requests == 2


def test_a_handler_exception_is_raised_in_the_clientapp_with_the_state_it_left(worker: NodeWorker) -> None:
    context = _context(worker.path)
    msg = _message(fail=True)
    answer = forward(str(worker.path), msg, context)
    with pytest.raises(WorkerRaised, match="ValueError: asked to fail"):
        answer.apply(msg, context)
    assert context.state.config_records["n"]["calls"] == 1


def test_another_user_id_is_refused(tmp_path: Path) -> None:
    node = NodeWorker(tmp_path / "w.sock", _handler, allowed_uid=os.getuid() + 1)  # "us" are now the other user
    node.start()
    thread = threading.Thread(target=node.serve, kwargs={"max_requests": 1}, daemon=True)
    thread.start()
    try:
        with pytest.raises(WorkerUnavailable, match="broke off"):
            forward(str(node.path), _message(), _context(node.path))
        assert node.refused == 1 and node.requests == 0
    finally:
        node.close()


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user needs root")
def test_another_user_cannot_connect_even_to_a_widened_socket(worker: NodeWorker) -> None:
    def connect_as_nobody() -> int:
        pid = os.fork()
        if pid == 0:  # child: become nobody, try to talk to the worker
            code = 0
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(10)
                    sock.connect(str(worker.path))
                    sock.sendall(b"\x00" * 16)
                    code = 3 if sock.recv(1) == b"" else 4  # 3: connected, then closed unanswered
            except PermissionError:
                code = 2  # the file mode stopped it
            except ConnectionError:  # reset or broken pipe: the worker closed the connection unanswered
                code = 3
            except BaseException:  # noqa: BLE001
                code = 5
            os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert connect_as_nobody() == 2
    os.chmod(worker.path, 0o666)  # an operator mistake: the peer check still refuses
    assert connect_as_nobody() == 3
    assert worker.refused == 1 and worker.requests == 0


def test_a_foreign_file_at_the_socket_path_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "x.sock").write_text("not a socket")
    with pytest.raises(FileExistsError, match="not this user's socket"):
        bind_private_socket(tmp_path / "x.sock")


def test_no_worker_means_in_process_work_announced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(thin, "_in_process", lambda msg, ctx: ran.append(msg.metadata.message_type) or _handler(msg, ctx))
    context = _context(tmp_path / "absent.sock")
    logging.getLogger("flwr").addHandler(caplog.handler)
    try:
        for _ in range(3):
            thin.handle(_message(), context)
    finally:
        logging.getLogger("flwr").removeHandler(caplog.handler)
    assert ran == ["train"] * 3 and context.state.config_records["n"]["calls"] == 3
    # the flwr logger may also propagate to the root logger caplog listens on: count distinct records
    warnings = list({id(r): r for r in caplog.records if "node worker at" in r.getMessage()}.values())
    assert len(warnings) == 1 and "absent.sock" in warnings[0].getMessage()


def test_the_thin_app_routes_every_message_type_the_handlers_know() -> None:
    from client.app import app as local_app

    assert set(thin.app._registered_funcs) == set(local_app._registered_funcs)  # noqa: SLF001
