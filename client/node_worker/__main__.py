"""``python -m client.node_worker --socket PATH``: the warm worker of one node (``docs/scaling.md §3``).

Start it beside the SuperNode, as the node's user, and give the SuperNode
``--node-config "... worker-socket='PATH'"``; its ClientApp processes then forward every message here.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.node_worker", description=__doc__)
    parser.add_argument("--socket", required=True, type=Path, help="path of the Unix socket to create (mode 0600)")
    parser.add_argument("--status-file", type=Path, help="JSON file rewritten after each request: pid, requests, "
                        "refused connections, model builds")
    args = parser.parse_args(argv)

    from client.app import app as local_app  # the handlers and their heavy imports, once for the worker's life
    from client.node_worker.service import NodeWorker

    worker = NodeWorker(args.socket.resolve(), local_app, status_file=args.status_file)
    try:
        worker.start()
    except OSError as exc:
        print(f"node worker: cannot listen on {args.socket}: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
