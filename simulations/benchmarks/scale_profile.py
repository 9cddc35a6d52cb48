"""Where the time goes in a large simulation: every process of a real ``flwr run``, sampled by py-spy.

Issue 20 asks why the overhead per client-round grows with the total number of clients. This runs
the scale benchmark's simulation (:func:`simulations.benchmarks.scale.simulate`: tiny-llama on
``arithmetic``, FedIT, ``--per-round`` clients trained per round) and, while it runs, attaches one
``py-spy record`` (sampling profiler, no instrumentation) to every Python process started under the
run's ``FLWR_HOME``: the SuperLink, the SuperExec, the simulation process (Flower's Ray backend and
the ServerApp) and each Ray worker (ClientApps). It also keeps the CPU seconds of every process,
Python or not (Ray's own daemons are C++), from ``psutil``.

Reported per process kind: CPU seconds, and the functions with the most samples, on their own
(*self*: the innermost frame) and with what they call (*inclusive*). Only on-CPU samples are kept
(py-spy without ``--idle``), so a poll loop that sleeps costs nothing here and one that spins shows.

Usage (heavy: one at a time on a small box; needs ``pip install py-spy``)::

    python -m simulations.benchmarks.scale_profile --clients 1000 10000 --per-round 100 --rounds 3 \\
        --out runs/benchmarks/scale_profile.json

Raw collapsed stacks (one file per process, flamegraph-ready) are kept under ``--raw DIR``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from simulations.benchmarks._output import write_result
from simulations.benchmarks.scale import BASE, match_command, simulate, simulation_processes
from simulations.launch import find_app_dir

KINDS = (  # (what the command line contains, the kind reported); the first match wins
    ("ray::", "ray worker (ClientApp)"),
    ("default_worker.py", "ray worker (ClientApp)"),
    ("flwr-simulation", "simulation (Ray backend + ServerApp)"),
    ("flower-superexec", "superexec"),
    ("flower-superlink", "superlink"),
    ("flwr-serverapp", "serverapp"),
)


def process_kind(cmdline: Iterable[str]) -> str:
    """The kind of a simulation process from its command line (``other: <name>`` when unknown)."""
    parts = list(cmdline)
    return match_command(parts, KINDS) or f"other: {Path(parts[0]).name if parts else '?'}"


def summarise_collapsed(lines: Iterable[str], top: int = 15) -> dict[str, Any]:
    """Top functions of py-spy's raw (collapsed) output: ``frame;frame;...;innermost count`` per line.

    *self* counts a sample for the innermost frame only; *inclusive* for every distinct frame of
    the stack (recursion counted once). Frames are ``function (file:line)`` as py-spy writes them.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return {"samples": total, "self": own.most_common(top), "inclusive": inclusive.most_common(top)}


def _function(frame: str) -> str:
    """``poll (flwr/simulation/ray_transport/ray_actor.py:123)`` -> the same without the line number,
    so samples on different lines of one function add up."""
    head, sep, where = frame.partition(" (")
    if not sep:
        return frame
    return f"{head} ({where.rstrip(')').rsplit(':', 1)[0]})"


@dataclass
class Spy:
    """One ``py-spy record`` attached to one process image (``cmdline`` as seen when it attached)."""

    proc: subprocess.Popen[bytes] | None
    raw: Path
    kind: str
    cmdline: tuple[str, ...] = ()


# Launchers that exec another Python image in the same process within a second: a py-spy attached to
# them keeps running on the stale image and records nothing after the exec (Ray's actors start this way).
EXEC_LAUNCHERS = ("ray/_private/workers/setup_worker.py",)


def needs_spy(attached: list[Spy], cmdline: tuple[str, ...]) -> bool:
    """Attach (again) to a process? Not while it is a launcher about to exec (:data:`EXEC_LAUNCHERS`);
    yes if nothing is attached, or if the last spy has ended and the process now runs something else."""
    if any(launcher in part for part in cmdline for launcher in EXEC_LAUNCHERS):
        return False
    if not attached:
        return True
    last = attached[-1]
    return last.proc is not None and last.proc.poll() is not None and last.cmdline != cmdline


class Profiler:
    """Attaches ``py-spy record`` to every new Python process under ``FLWR_HOME = home``; keeps CPU times."""

    def __init__(self, home: str, raw_dir: Path, rate: int) -> None:
        self.home, self.raw_dir, self.rate = home, raw_dir, rate
        self.spies: dict[int, list[Spy]] = {}
        self.cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Profiler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        running = [spy.proc for spies in self.spies.values() for spy in spies if spy.proc is not None]
        for proc in running:  # py-spy writes its file on SIGINT (or when the target exits)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _loop(self) -> None:
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        while not self._stop.is_set():
            for proc in simulation_processes(self.home):
                try:
                    cmdline = tuple(proc.cmdline())
                    kind = process_kind(list(cmdline))
                    times = proc.cpu_times()
                    self.cpu[proc.pid] = (kind, times.user + times.system)
                    attached = self.spies.setdefault(proc.pid, [])
                    if not needs_spy(attached, cmdline) or "python" not in Path(proc.exe()).name:  # py-spy reads Python only
                        continue
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                raw = self.raw_dir / f"{proc.pid}-{len(attached)}.txt"
                spy = subprocess.Popen(
                    [py_spy, "record", "--pid", str(proc.pid), "--rate", str(self.rate), "--format", "raw",
                     "--output", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                attached.append(Spy(spy, raw, kind, cmdline))
            time.sleep(0.5)

    def report(self, top: int) -> dict[str, Any]:
        """Per process kind: processes, CPU seconds, and the summed profile of its processes."""
        kinds: dict[str, dict[str, Any]] = {}
        for kind, seconds in self.cpu.values():
            entry = kinds.setdefault(kind, {"processes": 0, "cpu_s": 0.0, "lines": []})
            entry["processes"] += 1
            entry["cpu_s"] += seconds
        for spy in (spy for spies in self.spies.values() for spy in spies):
            if spy.raw.exists():  # a process profiled under two images counts under the kind each had
                kinds.setdefault(spy.kind, {"processes": 0, "cpu_s": 0.0, "lines": []})["lines"] += spy.raw.read_text().splitlines()
        return {
            kind: {"processes": e["processes"], "cpu_s": round(e["cpu_s"], 1), **summarise_collapsed(e["lines"], top)}
            for kind, e in sorted(kinds.items(), key=lambda item: -item[1]["cpu_s"])
        }


def profile_run(app: Path, out: Path, raw_dir: Path, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """One simulation of ``clients`` total clients under the profiler."""
    per_round = min(clients, args.per_round)
    values = {**BASE, "train.local-steps": args.steps, "num-server-rounds": args.rounds,
              "fraction-train": per_round / clients, "min-train-nodes": per_round}
    holder: dict[str, Profiler] = {}

    def on_home(home: str) -> None:  # called by simulate() before it launches the run
        run_raw = raw_dir / f"clients-{clients}"
        run_raw.mkdir(parents=True, exist_ok=True)
        holder["profiler"] = Profiler(home, run_raw, args.rate).__enter__()

    started = time.perf_counter()
    try:
        run = simulate(app, out, f"profile-{clients}", clients, values, on_home=on_home)
    finally:
        if "profiler" in holder:
            holder["profiler"].__exit__(None, None, None)
    rows = [r for r in run["rows"] if r["round"] >= 1]
    return {"total_clients": clients, "per_round": per_round, "wall_s": round(time.perf_counter() - started, 1),
            "round_wall_s": [round(r["wall_s"], 2) for r in rows], "peak_rss_mb": round(run["peak_rss"] / 1e6),
            "by_process": holder["profiler"].report(args.top)}


def _print(cell: dict[str, Any], top: int) -> None:
    print(f"\n== {cell['total_clients']} clients ({cell['per_round']} a round): wall {cell['wall_s']} s, "
          f"rounds {cell['round_wall_s']} s, peak RSS {cell['peak_rss_mb']} MB", flush=True)
    for kind, entry in cell["by_process"].items():
        print(f"-- {kind}: {entry['processes']} process(es), {entry['cpu_s']} CPU s, {entry['samples']} samples")
        for name, samples in entry["self"][:top]:
            share = samples / entry["samples"] if entry["samples"] else 0.0
            print(f"   {share:6.1%}  {name}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[1000, 10000])
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second per process")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--raw", type=Path, default=Path("runs/benchmarks/scale_profile_raw"))
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/scale_profile.json"))
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        parser.error("py-spy is not installed: pip install py-spy")
    app = find_app_dir()
    cells: list[dict[str, Any]] = []
    result = {"benchmark": "scale_profile", "settings": {**BASE, "local-steps": args.steps, "rounds": args.rounds,
                                                          "per-round": args.per_round, "rate": args.rate}, "cells": cells}
    with tempfile.TemporaryDirectory() as tmp:
        for clients in args.clients:
            cells.append(profile_run(app, Path(tmp), args.raw, clients, args))
            _print(cells[-1], args.top)
            write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
