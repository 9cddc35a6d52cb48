"""Flower only: one ``train`` message to every node a round, answered at once by the ClientApp.

The work per message is nothing, so a round's wall time is what Flower's engine costs for it: in the
Ray simulation, dispatch to a warm actor; in the process deployment (``--isolation process``), a fresh
``flwr-clientapp`` process per message started by the node's SuperExec, plus the pulls and pushes
between SuperLink, SuperNode and SuperExec. ``simulations/benchmarks/flower_process_repro.py`` runs it
both ways; ``docs/scaling.md §3`` compares it with Corolla's deployed round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client_app = ClientApp()
server_app = ServerApp()


@client_app.train()
def answer(msg: Message, context: Context) -> Message:
    """Reply at once."""
    return Message(RecordDict({"metrics": ConfigRecord({"ok": 1})}), reply_to=msg)


def _send_and_receive(grid: Grid, messages: list[Message], *, timeout: float) -> list[Message]:
    """Push, then pull every 0.1 s as Corolla's ServerApp does (``server/progress.py``): Flower's own
    ``Grid.send_and_receive`` sleeps 3 s between pulls in a deployment, which would round every round
    up to a multiple of 3 s and hide what the nodes cost."""
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending -= {reply.metadata.reply_to_message_id for reply in got}
        if pending:
            time.sleep(0.1)
    return replies


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Wait for ``nodes`` nodes, run ``rounds`` rounds of one message per node, write the round times."""
    rounds, expected, out = int(context.run_config["rounds"]), int(context.run_config["nodes"]), str(context.run_config["out"])
    if not out:
        raise ValueError("run config `out` (the JSON file the round times go to) is required")
    deadline = time.monotonic() + 300
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(nodes)} of {expected} nodes connected after 300 s")
        time.sleep(0.5)
    seconds: list[float] = []
    for server_round in range(1, rounds + 1):
        started = time.perf_counter()
        messages = [Message(RecordDict({"config": ConfigRecord({"round": server_round})}), dst_node_id=node,
                            message_type="train") for node in nodes]
        replies = _send_and_receive(grid, messages, timeout=600.0)
        if len(replies) != len(messages) or any(reply.has_error() for reply in replies):
            raise RuntimeError(f"round {server_round}: {len(replies)} replies to {len(messages)} messages, errors included")
        seconds.append(time.perf_counter() - started)
    Path(out).write_text(json.dumps({"round_s": seconds, "nodes": len(nodes)}))
