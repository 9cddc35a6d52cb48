"""The scale benchmark's pieces: valid configs, the two baselines, the process-tree RSS probe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import client.worker as worker_module
from simulations.benchmarks.scale import BASE, shutdown, total_rss
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
