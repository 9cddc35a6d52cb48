"""Flower-only reproduction: a simulated round costs more the more SuperNodes exist, at fixed work.

No Corolla code runs here: a ServerApp that sends ``--per-round`` tiny query messages a round to
nodes sampled from ``N`` SuperNodes, and a ClientApp that answers at once, run with Flower's own
``flwr.simulation.run_simulation`` on the Ray backend. The work per round is the same for every
``N``, so the round's wall time should not depend on ``N``; it does.

Why (Flower 1.42, read in its source): the simulation engine's dispatcher
(``flwr/server/superlink/fleet/vce/vce_api.py::add_messages_to_queue``) calls
``state.get_message_ins(node_id, limit=1)`` for **every** registered node every 0.1 s, and the
in-memory LinkState's ``get_message_ins`` (``linkstate/in_memory_linkstate.py``) walks **every**
stored message for each call, validating each under the state's lock. One sweep therefore costs
O(N·M) for N nodes and M messages in flight, on one core, while holding the lock the ServerApp's
pulls and the replies' stores need. Corolla cannot change this without patching Flower (which it
does not); this script is the report to send upstream. ``docs/scaling.md §5`` has the numbers.

Usage::

    python -m simulations.benchmarks.flower_poll_repro --nodes 100 1000 10000 --per-round 100 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from simulations.benchmarks._output import write_result

client_app = ClientApp()


@client_app.query()
def answer(msg: Message, context: Context) -> Message:
    """Reply at once: the round's cost is Flower's alone."""
    return Message(RecordDict({"config": ConfigRecord({"ok": 1})}), reply_to=msg)


def make_server_app(nodes_expected: int, per_round: int, rounds: int, seconds: list[float]) -> ServerApp:
    """A ServerApp sending ``per_round`` queries a round; appends each round's wall time to ``seconds``."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + 600
        while len(nodes := sorted(grid.get_node_ids())) < nodes_expected:  # wait until every node is registered
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(nodes)} of {nodes_expected} nodes registered after 600 s")
            time.sleep(0.5)
        rng = random.Random(0)
        for _ in range(rounds):
            started = time.perf_counter()
            messages = [Message(RecordDict({"config": ConfigRecord({"x": 1})}), dst_node_id=node, message_type="query")
                        for node in rng.sample(nodes, min(per_round, len(nodes)))]
            replies = list(grid.send_and_receive(messages, timeout=3600))
            if any(reply.has_error() for reply in replies) or len(replies) != len(messages):
                raise RuntimeError(f"{len(replies)} replies to {len(messages)} queries, errors included")
            seconds.append(time.perf_counter() - started)

    return server_app


def measure(nodes: int, per_round: int, rounds: int) -> dict[str, Any]:
    """One ``run_simulation`` of ``nodes`` SuperNodes; per-round wall times."""
    from flwr.simulation import run_simulation

    seconds: list[float] = []
    started = time.perf_counter()
    run_simulation(server_app=make_server_app(nodes, per_round, rounds, seconds), client_app=client_app,
                   num_supernodes=nodes, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    if len(seconds) != rounds:
        raise RuntimeError(f"{nodes} nodes: {len(seconds)} of {rounds} rounds completed (see Flower's log above)")
    steady = seconds[1:] or seconds
    return {"nodes": nodes, "per_round": min(per_round, nodes), "round_s": [round(s, 3) for s in seconds],
            "steady_round_s": sum(steady) / len(steady), "wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", nargs="+", type=int, default=[100, 1000, 10000])
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/flower_poll_repro.json"))
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    cells: list[dict[str, Any]] = []
    result = {"benchmark": "flower_poll_repro", "flwr": __import__("flwr").__version__, "cells": cells}
    print(f"{'nodes':>7} {'/round':>7} {'steady round s':>15} {'vs first':>9}  rounds", flush=True)
    for nodes in args.nodes:
        cells.append(measure(nodes, args.per_round, args.rounds))
        c = cells[-1]
        ratio = c["steady_round_s"] / cells[0]["steady_round_s"]
        print(f"{nodes:>7} {c['per_round']:>7} {c['steady_round_s']:>15.3f} {ratio:>8.2f}x  {c['round_s']}", flush=True)
        write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
