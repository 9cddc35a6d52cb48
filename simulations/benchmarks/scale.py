"""Simulation at scale: throughput, memory, leaks and resume of real ``flwr run`` simulations.

Four measurements (issue 5), each through the same path as ``corolla run`` (Corolla's managed
SuperLink, Flower's Ray simulation engine), on ``tiny-llama`` / ``arithmetic`` with FedIT, batch 2
(so that every client of a 1,000-client split has a full batch), ``--steps`` local steps:

1. ``throughput``: client-rounds per second at 10, 100 and 1,000 total clients (at most
   ``--per-round`` trained per round), against two baselines measured in the same invocation:
   (a) *naive*: the same ClientApp with its per-process cache cleared before every message, i.e. a
   ClientApp that rebuilds model, adapter and data from scratch for every message (what most peer
   examples do), called in-process; (b) *floor*: the same local steps in a bare Python loop, no
   Flower, no messages. Reports overhead = floor time / ours (per client-round) and
   speed-up = naive / ours. Round 1 (actor start-up, the worker's one-time build) is excluded.
2. ``memory``: peak RSS summed over every process of the simulation (SuperLink, SuperExec,
   ServerApp, Ray workers), sampled every 0.25 s, for the same runs.
3. ``leak``: RSS after each of ``--leak-rounds`` rounds of a 10-client run; least-squares slope.
4. ``resume``: a run of 6 rounds stopped (``flwr stop``) once its round-3 checkpoint exists,
   resumed with ``resume-from``, and an uninterrupted run: the final adapter's sha256 must match.

Usage: ``python -m simulations.benchmarks.scale [throughput memory leak resume] [--clients 10 100 1000]
[--per-round 100] [--rounds 3] [--steps 5] [--leak-rounds 50] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from server.checkpoint import CHECKPOINT_NAME, Checkpoint
from server.run_folder import read_rounds
from simulations.benchmarks._output import write_result
from simulations.benchmarks.scale_baselines import floor_seconds, naive_seconds
from simulations.flower_env import flower_binary, flower_env
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides

BASE: dict[str, Any] = {
    "strategy.name": "fedit", "model.name": "tiny-llama", "task.name": "arithmetic", "adapter.rank": 8,
    "train.batch-size": 2, "train.lr": 0.01, "data.partitioner": "iid", "eval.central": False,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(home: Path) -> dict[str, str]:
    """A Flower environment with its own home and ports, so its processes can be found and killed."""
    return flower_env({**os.environ, "FLWR_HOME": str(home), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
                       "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port())})


def simulation_processes(home: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FLWR_HOME") == home:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


# What each process of a simulation is, by its command line (first match wins); the rest is "other".
_ROLES: tuple[tuple[str, str], ...] = (
    ("flower-superlink", "superlink"), ("flower-superexec", "superexec"), ("flwr-simulation", "flwr-simulation"),
    ("ClientAppActor", "ray-workers"), ("/flwr run", "flwr-cli"), ("ray", "ray-runtime"),
)


def match_command(cmdline: Iterable[str], table: Iterable[tuple[str, str]]) -> str | None:
    """The name of the first ``(needle, name)`` of ``table`` whose needle the command line contains."""
    line = " ".join(cmdline)
    return next((name for needle, name in table if needle in line), None)


def process_role(cmdline: list[str]) -> str:
    """``superlink``, ``superexec``, ``flwr-simulation`` (the ServerApp and Flower's engine),
    ``ray-workers`` (the ClientApp actors), ``flwr-cli`` (``flwr run --stream``), ``ray-runtime``
    (raylet, GCS, ...) or ``other``."""
    return match_command(cmdline, _ROLES) or "other"


def rss_by_role(home: str) -> dict[str, int]:
    """Bytes of resident memory of every process started under ``FLWR_HOME = home``, summed per
    :func:`process_role`."""
    totals: dict[str, int] = {}
    for proc in simulation_processes(home):
        try:
            role = process_role(proc.cmdline())
            totals[role] = totals.get(role, 0) + proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return totals


def total_rss(home: str) -> int:
    """Bytes of resident memory summed over every process started under ``FLWR_HOME = home``."""
    return sum(rss_by_role(home).values())


def shutdown(home: str) -> None:
    """Kill what the managed SuperLink left running (each measurement starts from nothing)."""
    for proc in simulation_processes(home):
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


class RssSampler:
    """Samples :func:`total_rss` in a thread; ``peak`` and per-round values (when ``rounds_path`` grows)."""

    def __init__(self, home: str, rounds_path: Path | None = None, interval: float = 0.25) -> None:
        self.home, self.rounds_path, self.interval = home, rounds_path, interval
        self.peak = 0
        self.peak_by_role: dict[str, int] = {}  # each role's own peak (not necessarily at the same moment)
        self.per_round: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        seen = 0
        while not self._stop.is_set():
            by_role = rss_by_role(self.home)
            rss = sum(by_role.values())
            self.peak = max(self.peak, rss)
            for role, value in by_role.items():
                self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), value)
            if self.rounds_path is not None and self.rounds_path.exists():
                lines = len(self.rounds_path.read_text().splitlines())
                if lines > seen:
                    self.per_round.extend([rss] * (lines - seen))
                    seen = lines
            time.sleep(self.interval)


def simulate(
    app: Path, out: Path, name: str, clients: int, values: dict[str, Any], *, rounds_path: bool = False,
    on_home: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One real simulation with RSS sampling; returns its rows and memory figures.

    ``on_home`` sees the run's ``FLWR_HOME`` before it starts (a profiler finds its processes by it)."""
    home = Path(tempfile.mkdtemp(prefix="flwr-home-"))
    env = isolated_env(home)
    if on_home is not None:
        on_home(str(home))
    _, flat = resolve_config(app, [toml_overrides({**values, "output-dir": str(out), "run-name": name})])
    started = time.perf_counter()
    try:
        with RssSampler(str(home), out / name / "rounds.jsonl" if rounds_path else None) as sampler:
            result = launch(app, flat, num_supernodes=clients, env=env, echo=False)
    finally:
        shutdown(str(home))
    if not result.ok:
        raise RuntimeError(f"{name}: run {result.run_id} ended {result.status}\n{result.output[-3000:]}")
    return {"rows": read_rounds(out / name / "rounds.jsonl"), "peak_rss": sampler.peak, "per_round_rss": sampler.per_round,
            "peak_rss_by_role": sampler.peak_by_role,
            "wall_s": time.perf_counter() - started}


def throughput(app: Path, out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measurements 1 and 2."""
    cells = []
    for clients in args.clients:
        per_round = min(clients, args.per_round)
        values = {**BASE, "train.local-steps": args.steps, "num-server-rounds": args.rounds,
                  "fraction-train": per_round / clients, "min-train-nodes": per_round}
        run = simulate(app, out, f"scale-{clients}", clients, values)
        timed = [r for r in run["rows"] if r["round"] >= 2]
        secs = float(np.mean([r["wall_s"] for r in timed]))
        trained = float(np.mean([r["clients"] for r in timed]))
        floor = floor_seconds(values, num_partitions=clients, clients=min(per_round, args.baseline_clients))
        naive = naive_seconds(values, num_partitions=clients, clients=min(per_round, args.naive_clients))
        ours = secs / trained
        cells.append({
            "total_clients": clients, "clients_per_round": trained, "client_rounds_per_s": 1 / ours,
            "ours_s_per_client_round": ours, "floor_s_per_client_round": floor, "naive_s_per_client_round": naive,
            "overhead": ours / floor, "speedup_vs_naive": naive / ours, "peak_rss_mb": run["peak_rss"] / 1e6,
            "peak_rss_mb_by_process": {role: value / 1e6 for role, value in sorted(run["peak_rss_by_role"].items())},
        })
        c = cells[-1]
        print(f"{clients:>6} {trained:>6.0f} {c['client_rounds_per_s']:>9.2f} {ours * 1e3:>9.1f} {floor * 1e3:>9.1f} "
              f"{naive * 1e3:>9.1f} {c['overhead']:>8.2f} {c['speedup_vs_naive']:>8.2f} {c['peak_rss_mb']:>9.0f}", flush=True)
        print("        peak RSS MB by process: " + ", ".join(f"{role} {mb:.0f}" for role, mb in c["peak_rss_mb_by_process"].items()),
              flush=True)
    return cells


def leak(app: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measurement 3."""
    values = {**BASE, "train.local-steps": 1, "num-server-rounds": args.leak_rounds}
    run = simulate(app, out, "leak", 10, values, rounds_path=True)
    rss = np.array(run["per_round_rss"][1:], dtype=np.float64) / 1e6  # after rounds 1..N (row 0: initial)
    warm = min(5, max(len(rss) - 2, 0))
    x = np.arange(warm + 1, len(rss) + 1)
    slope = float(np.polyfit(x, rss[warm:], 1)[0]) if len(x) >= 2 else float("nan")
    noise = float(np.std(rss[warm:] - np.polyval(np.polyfit(x, rss[warm:], 1), x))) if len(x) >= 2 else float("nan")
    result = {"rounds": args.leak_rounds, "rss_mb_per_round": rss.round(1).tolist(), "slope_mb_per_round": slope,
              "residual_std_mb": noise, "growth_over_run_mb": slope * (len(x) - 1)}
    print(f"leak: {len(rss)} rounds, slope {slope:+.3f} MB/round (residual std {noise:.1f} MB), "
          f"first {rss[0]:.0f} MB, last {rss[-1]:.0f} MB", flush=True)
    return result


def _adapter_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()


def resume(app: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measurement 4: stop at round 3 of 6 with ``flwr stop``, resume, compare with an uninterrupted run."""
    values = {**BASE, "strategy.name": args.resume_strategy, "train.local-steps": args.steps, "num-server-rounds": 6}
    whole = simulate(app, out, "whole", 10, values)
    home = Path(tempfile.mkdtemp(prefix="flwr-home-"))
    env = isolated_env(home)
    _, flat = resolve_config(app, [toml_overrides({**values, "output-dir": str(out), "run-name": "killed"})])
    run_id: list[int] = []
    stopped_after: list[int] = []

    def watch(line: str) -> None:
        if "Successfully started run" in line:
            run_id.append(int(line.rsplit(" ", 1)[1]))

    def stopper() -> None:
        path = out / "killed"
        while True:
            time.sleep(0.2)
            if run_id and (path / CHECKPOINT_NAME).exists() and Checkpoint.load(path).server_round >= 3:
                subprocess.run([flower_binary("flwr"), "stop", str(run_id[0])], env=env, capture_output=True, timeout=120)
                stopped_after.append(Checkpoint.load(path).server_round)
                return

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        killed = launch(app, flat, num_supernodes=10, env=env, echo=False, on_line=watch)
    finally:
        shutdown(str(home))
    thread.join(timeout=5)
    rows_at_stop = len(read_rounds(out / "killed" / "rounds.jsonl")) - 1
    simulate(app, out, "killed", 10, {**values, "resume-from": str(out / "killed")})
    same = _adapter_sha(out / "killed") == _adapter_sha(out / "whole")
    result = {"strategy": args.resume_strategy, "stopped_status": killed.status, "checkpoint_round_at_stop": stopped_after[:1],
              "rounds_recorded_at_stop": rows_at_stop, "whole_sha256": _adapter_sha(out / "whole"),
              "resumed_sha256": _adapter_sha(out / "killed"), "bit_identical": same, "whole_wall_s": whole["wall_s"]}
    print(f"resume ({args.resume_strategy}): stopped ({killed.status}) after round {stopped_after[:1]}, "
          f"resumed to 6: adapter bit-identical = {same}", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", default=["throughput", "leak", "resume"],
                        help="throughput (includes memory), leak, resume")
    parser.add_argument("--clients", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--baseline-clients", type=int, default=20, help="clients timed for the bare-loop floor")
    parser.add_argument("--naive-clients", type=int, default=5, help="messages timed for the rebuild-per-message baseline")
    parser.add_argument("--leak-rounds", type=int, default=50)
    parser.add_argument("--resume-strategy", default="fedex")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/scale.json"))
    args = parser.parse_args(argv)
    app = find_app_dir()
    result: dict[str, Any] = {"benchmark": "scale", "settings": {**BASE, "local-steps": args.steps, "rounds": args.rounds},
                              "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "throughput" in args.parts or "memory" in args.parts:
            print(f"{'total':>6} {'/round':>6} {'cl-rnd/s':>9} {'ours ms':>9} {'floor ms':>9} {'naive ms':>9} "
                  f"{'overhead':>8} {'speedup':>8} {'peak MB':>9}", flush=True)
            result["throughput"] = throughput(app, out, args)
            peaks = [c["peak_rss_mb"] for c in result["throughput"]]
            result["memory_spread"] = max(peaks) / min(peaks) - 1
            print(f"memory: peak RSS {min(peaks):.0f}..{max(peaks):.0f} MB, spread {result['memory_spread']:.1%}", flush=True)
        if "leak" in args.parts:
            result["leak"] = leak(app, out, args)
        if "resume" in args.parts:
            result["resume"] = resume(app, out, args)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
