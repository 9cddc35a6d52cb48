"""The scale profile's parsing of py-spy's collapsed stacks and its process kinds (no simulation here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulations.benchmarks.scale_profile import Profiler, Spy, needs_spy, process_kind, summarise_collapsed

RAW = [
    "<module> (flwr/simulation/app.py:10);run (flwr/simulation/vce.py:50);poll (flwr/simulation/vce.py:80) 30",
    "<module> (flwr/simulation/app.py:10);run (flwr/simulation/vce.py:50);poll (flwr/simulation/vce.py:81) 10",
    "<module> (flwr/simulation/app.py:10);run (flwr/simulation/vce.py:52) 5",
    "<module> (a.py:1);f (a.py:2);f (a.py:3) 5",  # recursion: f counted once inclusively
    "garbage line without a count",
    "",
]


def test_self_time_adds_up_lines_of_one_function_and_inclusive_counts_each_frame_once() -> None:
    summary = summarise_collapsed(RAW)
    assert summary["samples"] == 50
    assert summary["self"][0] == ("poll (flwr/simulation/vce.py)", 40)
    assert dict(summary["self"]) == {"poll (flwr/simulation/vce.py)": 40, "run (flwr/simulation/vce.py)": 5, "f (a.py)": 5}
    inclusive = dict(summary["inclusive"])
    assert inclusive["<module> (flwr/simulation/app.py)"] == 45
    assert inclusive["run (flwr/simulation/vce.py)"] == 45
    assert inclusive["f (a.py)"] == 5
    assert summarise_collapsed(RAW, top=1)["self"] == [("poll (flwr/simulation/vce.py)", 40)]


def test_processes_are_named_by_their_command_line() -> None:
    assert process_kind(["ray::ClientAppActor.run"]) == "ray worker (ClientApp)"
    assert process_kind(["/venv/bin/python", "/venv/bin/flwr-simulation", "--token", "x"]) == "simulation (Ray backend + ServerApp)"
    assert process_kind(["/venv/bin/python", "/venv/bin/flower-superlink", "--insecure"]) == "superlink"
    assert process_kind(["/usr/lib/ray/raylet", "--node"]) == "other: raylet"
    assert process_kind([]) == "other: ?"


def test_the_report_sums_cpu_and_samples_per_kind(tmp_path: Path) -> None:
    profiler = Profiler("home", tmp_path, rate=50)
    (tmp_path / "1.txt").write_text("\n".join(RAW[:3]))
    (tmp_path / "2.txt").write_text(RAW[3])
    profiler.cpu = {1: ("simulation", 12.0), 2: ("ray worker", 3.0), 3: ("ray worker", 4.5), 4: ("other: raylet", 1.0)}
    profiler.spies = {1: [Spy(None, tmp_path / "1.txt", "simulation")], 2: [Spy(None, tmp_path / "2.txt", "ray worker")],
                      3: [Spy(None, tmp_path / "missing.txt", "ray worker")]}
    report = profiler.report(top=3)
    assert list(report) == ["simulation", "ray worker", "other: raylet"]  # by CPU seconds
    assert (report["simulation"]["cpu_s"], report["simulation"]["samples"]) == (12.0, 45)
    assert (report["ray worker"]["processes"], report["ray worker"]["cpu_s"], report["ray worker"]["samples"]) == (2, 7.5, 5)
    assert report["other: raylet"]["samples"] == 0


def test_a_process_that_execs_another_image_is_profiled_again(tmp_path: Path) -> None:
    setup = ("python", "ray/_private/workers/setup_worker.py")
    actor = ("ray::ClientAppActor.run",)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not needs_spy([], setup)  # Ray's launcher execs the actor in place: wait for the actor's image
        assert needs_spy([], actor)
        assert needs_spy([Spy(ended, tmp_path / "a.txt", "other", ("python", "x.py"))], actor)  # ended, now another image
        assert not needs_spy([Spy(ended, tmp_path / "a.txt", "other", actor)], actor)  # ended on the same image: leave it
        assert not needs_spy([Spy(running, tmp_path / "a.txt", "other", setup)], actor)  # still sampling: renamed only
    finally:
        running.kill()
        running.wait()
