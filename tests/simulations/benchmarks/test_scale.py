"""The scale benchmark's pieces: valid configs, the two baselines, the process-tree RSS probe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import client.worker as worker_module
from simulations.benchmarks.scale import BASE, process_role, rss_by_role, shutdown, total_rss
from simulations.benchmarks.scale_baselines import floor_seconds, naive_seconds
from contract import parse_run_config


def test_every_cell_is_a_valid_config_with_at_most_100_clients_a_round() -> None:
    for clients in (10, 100, 1000):
        per_round = min(clients, 100)
        config = parse_run_config({**BASE, "fraction-train": per_round / clients, "min-train-nodes": per_round})
        assert config.fraction_train * clients == per_round and config.train.batch_size == 2


def test_baselines_time_real_training_and_the_naive_one_keeps_nothing() -> None:
    values = {**BASE, "train.local-steps": 1}
    assert floor_seconds(values, num_partitions=1000, clients=2) > 0
    assert naive_seconds(values, num_partitions=1000, clients=2) > 0
    assert not worker_module._CACHE  # nothing survives a naive message


def test_rss_probe_finds_and_kills_every_process_of_one_flower_home(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "FLWR_HOME": home})
    try:
        deadline = time.time() + 10
        while total_rss(home) == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert total_rss(home) > 1_000_000  # a Python interpreter
        assert total_rss(str(tmp_path / "other")) == 0
        shutdown(home)
        assert child.wait(timeout=10) != 0
    finally:
        child.kill()


def test_processes_are_attributed_to_flower_ray_or_other_by_command_line() -> None:
    assert process_role(["/venv/bin/python", "/venv/bin/flower-superlink", "--insecure"]) == "superlink"
    assert process_role(["/venv/bin/python", "/venv/bin/flwr-simulation", "--app", "x"]) == "flwr-simulation"
    assert process_role(["ray::ClientAppActor.run"]) == "ray-workers"
    assert process_role(["/venv/bin/python", "/venv/bin/flower-superexec", "--insecure"]) == "superexec"
    assert process_role(["/venv/bin/python3", "/venv/bin/flwr", "run", "/app", "--stream"]) == "flwr-cli"
    assert process_role(["/venv/lib/python3.12/site-packages/ray/core/src/ray/raylet/raylet", "--x"]) == "ray-runtime"
    assert process_role(["/usr/bin/python", "-c", "import time"]) == "other"


def test_rss_by_role_sums_to_the_total(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "FLWR_HOME": home})
    try:
        deadline = time.time() + 10
        while not rss_by_role(home) and time.time() < deadline:
            time.sleep(0.05)
        roles = rss_by_role(home)
        assert set(roles) == {"other"} and roles["other"] > 1_000_000
    finally:
        child.kill()
        child.wait()
