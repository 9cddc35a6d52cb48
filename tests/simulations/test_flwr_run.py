"""End to end through the real Flower path: `flwr run` -> managed SuperLink -> Ray simulation.

Each test is a real simulation (tens of seconds). They share one isolated Flower home with its own
ports, and the managed SuperLink it starts is killed afterwards.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from server.run_folder import read_rounds
from simulations.launch import find_app_dir, launch, resolve_config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _own_flower_home(home: Path) -> dict[str, str]:
    """An environment whose managed SuperLink has its own home and ports (started by the first run)."""
    return {
        **{k: v for k, v in __import__("os").environ.items()},
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
    }


def _kill_flower_home(home: Path) -> None:
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FLWR_HOME") == str(home):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@pytest.fixture(scope="module")
def flower_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("flwr-home")
    yield _own_flower_home(home)
    _kill_flower_home(home)


def _run(env: dict[str, str], out: Path, clients: int, overrides: list[str], *, app: Path | None = None):
    app = app or find_app_dir()
    _, flat = resolve_config(app, [*overrides, f'output-dir="{out}" run-name="e2e"'])
    return launch(app, flat, num_supernodes=clients, env=env, echo=False), out / "e2e"


TAMPERING_APP = "tests/simulations/tampering_app.py"


def _tampering_app_dir(root: Path) -> Path:
    """A copy of the Corolla app whose ClientApp is :mod:`tests.simulations.tampering_app` (it wraps ``client.app``)."""
    source = find_app_dir()
    app = root / "tampering-app"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("adapters", "client", "contract", "privacy", "server", "strategies"):
        shutil.copytree(source / package, app / package, ignore=ignore)
    (app / "tests" / "simulations").mkdir(parents=True)
    for init in ("tests/__init__.py", "tests/simulations/__init__.py"):
        (app / init).write_text("")
    shutil.copy(source / TAMPERING_APP, app / TAMPERING_APP)
    pyproject = (source / "pyproject.toml").read_text()
    pyproject = re.sub(r'(?m)^clientapp = .*$', 'clientapp = "tests.simulations.tampering_app:app"', pyproject)
    pyproject = pyproject.replace('fab-include = [', 'fab-include = ["tests/__init__.py", "tests/simulations/__init__.py", '
                                  f'"{TAMPERING_APP}", ', 1)
    assert "tests.simulations.tampering_app:app" in pyproject and TAMPERING_APP in pyproject
    (app / "pyproject.toml").write_text(pyproject)
    for extra in ("README.md",):
        if (source / extra).is_file():
            shutil.copy(source / extra, app / extra)
    return app


def _ledger_rows(path: Path) -> list[dict[str, str]]:
    with (path / "ledger.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_tiny_llama_4_clients_2_rounds_learns_and_leaves_a_complete_run_folder(
    flower_env: dict[str, str], tmp_path: Path
) -> None:
    result, folder = _run(
        flower_env,
        tmp_path,
        4,
        ['strategy.name="fedit" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 train.lr=0.01 '
         'adapter.rank=4 eval.max-examples=64'],
    )
    assert result.ok, result.output[-3000:]
    rows = read_rounds(folder / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["train_loss"] < rows[1]["train_loss"]
    assert rows[2]["eval_loss"] < rows[0]["eval_loss"]
    assert all(r["clients"] == 4 for r in rows[1:])
    ledger = _ledger_rows(folder)
    assert len(ledger) == 2 * 4 * 2  # rounds x nodes x directions
    assert len({r["node"] for r in ledger}) == 4
    for rnd in (1, 2):
        assert sum(int(r["bytes"]) for r in ledger if r["round"] == str(rnd) and r["direction"] == "up") == rows[rnd]["bytes_up"]
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert json.loads((folder / "config.json").read_text())["model.name"] == "tiny-llama"
    assert json.loads((folder / "summary.json").read_text())["bytes_up"] == sum(int(r["bytes"]) for r in ledger if r["direction"] == "up")
    assert "finished:completed" == result.status


def test_minilm_topics_climbs_well_above_chance(flower_env: dict[str, str], tmp_path: Path) -> None:
    result, folder = _run(
        flower_env, tmp_path, 3, ["num-server-rounds=2 train.local-steps=8 eval.max-examples=300"]
    )
    assert result.ok, result.output[-3000:]
    rows = read_rounds(folder / "rounds.jsonl")
    assert rows[0]["eval_accuracy"] < 0.4  # untrained head: about chance
    assert rows[-1]["eval_accuracy"] > 0.7


def test_a_failed_run_is_reported_as_failed_not_by_flwr_exit_code(flower_env: dict[str, str], tmp_path: Path) -> None:
    # a model path that does not exist passes the schema but fails inside the ServerApp
    result, folder = _run(flower_env, tmp_path, 2, [f'model.name="{tmp_path}/no-such-model"'])
    assert not result.ok
    assert result.run_id is not None and "failed" in result.status
    assert not folder.exists()


def test_a_run_whose_first_round_aggregates_nothing_fails_and_corolla_run_would_exit_non_zero(
    flower_env: dict[str, str], tmp_path: Path
) -> None:
    # every client raises in every round: the ServerApp stops at round 1 (docs/operations.md §2), Flower
    # marks the run failed, and LaunchResult.ok (what `corolla run` turns into its exit code) is False
    result, folder = _run(flower_env, tmp_path, 2, [
        'strategy.name="fedit" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=3 '
        'train.local-steps=2 adapter.rank=4 eval.max-examples=16 faults.fail-fraction=1.0'
    ])
    assert not result.ok and result.run_id is not None and "failed" in result.status, result.output[-3000:]
    assert [(r["round"], r["clients"], r["dropped"]) for r in read_rounds(folder / "rounds.jsonl")] == [(0, 0, 0), (1, 0, 2)]
    assert not (folder / "summary.json").exists()


def test_faults_and_a_resume_through_the_ray_engine(flower_env: dict[str, str], tmp_path: Path) -> None:
    # failing clients raise inside the ClientApp (Flower turns that into an error reply), malformed ones
    # send a NaN; slow clients and round-timeout are left to the in-process tests: a sleeping client holds
    # one of the two Ray workers for its whole sleep, which costs minutes here
    faulty = ('strategy.name="fedex" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 '
              'train.local-steps=2 adapter.rank=4 eval.max-examples=16 faults.fail-fraction=0.25 '
              'faults.malformed-fraction=0.25')
    result, folder = _run(flower_env, tmp_path, 4, [faulty])
    assert result.ok, result.output[-3000:]
    rows = read_rounds(folder / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dropped"]["total"] >= 2 and summary["timed_out"] == 0  # the seed's draws: 2 faulty clients a round
    assert all(r["clients"] + r["dropped"] == 4 and r["clients"] >= 1 for r in rows[1:])
    # the finished run continues for one more round from its checkpoint, in its own folder
    more, _ = _run(flower_env, tmp_path, 4, [faulty.replace("num-server-rounds=2", "num-server-rounds=3") + f' resume-from="{folder}"'])
    assert more.ok, more.output[-3000:]
    assert [r["round"] for r in read_rounds(folder / "rounds.jsonl")] == [0, 1, 2, 3]
    assert json.loads((folder / "summary.json").read_text())["resumed_after_round"] == 2


def test_a_dp_run_through_flower_shows_epsilon_rising_and_loss_falling(flower_env: dict[str, str], tmp_path: Path) -> None:
    # each ClientApp message runs in a Ray worker; ε can only rise if Context.state carries the history
    result, folder = _run(
        flower_env,
        tmp_path,
        4,
        ['strategy.name="fedit" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=3 train.lr=0.01 '
         'adapter.rank=4 eval.max-examples=32 privacy.enabled=true privacy.noise-multiplier=0.5 privacy.max-grad-norm=1.0'],
    )
    assert result.ok, result.output[-3000:]
    rows = read_rounds(folder / "rounds.jsonl")
    assert [r["clients"] for r in rows[1:]] == [4, 4, 4]
    assert 0 < rows[1]["epsilon"] < rows[2]["epsilon"] < rows[3]["epsilon"] < float("inf")
    assert rows[3]["train_loss"] < rows[1]["train_loss"]
    assert json.loads((folder / "summary.json").read_text())["privacy"]["epsilon"] == rows[3]["epsilon"]


def test_compare_runs_each_strategy_through_flower_and_writes_the_report(flower_env: dict[str, str], tmp_path: Path) -> None:
    from simulations.compare import compare

    overrides = {"model.name": "tiny-llama", "task.name": "arithmetic", "num-server-rounds": 2, "adapter.rank": 4,
                 "train.local-steps": 4, "eval.max-examples": 16}
    result = compare(["fedit", "fedsb"], overrides, out=tmp_path / "cmp", clients=2, env=flower_env)
    assert [p.name for p in result.runs] == ["fedit", "fedsb"]
    for folder in result.runs:
        rows = read_rounds(folder / "rounds.jsonl")
        assert [r["round"] for r in rows] == [0, 1, 2]
        assert json.loads((folder / "config.json").read_text())["seed"] == 42
    assert result.index.is_file() and (result.index.parent / "pareto.png").is_file()
    assert "| fedsb |" in result.table


def test_mixed_ranks_through_the_ray_engine(flower_env: dict[str, str], tmp_path: Path) -> None:
    """adapter.ranks over real SuperNodes: the census reaches every node, each trains and sends its own rank."""
    result, folder = _run(
        flower_env,
        tmp_path,
        4,
        ['strategy.name="flexlora" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 '
         'adapter.rank=4 adapter.ranks="2,4,8" train.local-steps=2 eval.max-examples=16'],
    )
    assert result.ok, result.output[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert sorted(summary["client_ranks"].values()) == [2, 2, 4, 8]  # partition i trains ranks[i % 3]
    rows = read_rounds(folder / "rounds.jsonl")
    assert all(r["clients"] == 4 and r["dropped"] == 0 for r in rows[1:])
    assert all(0 <= rows[2][f"trunc_rel/r{r}"] < 1 for r in (2, 4, 8))
    ledger = _ledger_rows(folder)
    assert sum(1 for r in ledger if r["phase"] == "setup" and r["direction"] == "up") == 4  # one census answer per node
    up = {summary["client_ranks"][r["node"]]: int(r["bytes"]) for r in ledger if r["phase"] == "train" and r["direction"] == "up" and r["round"] == "2"}
    assert up[2] < up[4] < up[8]


def test_hetlora_rank_self_pruning_through_the_ray_engine(flower_env: dict[str, str], tmp_path: Path) -> None:
    """HetLoRA's self-pruning over real SuperNodes (docs/algorithms.md §19.1): each node's pruned rank lives in its
    Context.state between rounds, and the server follows it (no reply dropped, smaller uploads)."""
    result, folder = _run(
        flower_env,
        tmp_path,
        2,
        ['strategy.name="hetlora" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=3 '
         'adapter.rank=4 adapter.ranks="2,4" train.local-steps=2 eval.max-examples=16 '
         'hetlora.prune-gamma=0.5 hetlora.prune-lambda=1.0'],
    )
    assert result.ok, result.output[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    rows = read_rounds(folder / "rounds.jsonl")
    assert all(r["clients"] == 2 and r["dropped"] == 0 for r in rows[1:])
    assert sum(r["rank_pruned"] for r in rows[1:]) >= 1 and rows[3]["rank_mean"] < rows[1]["rank_mean"]
    assert sum(summary["client_ranks"].values()) < 2 + 4  # the final ranks: at least one node pruned
    assert rows[3]["bytes_up"] < rows[1]["bytes_up"]


def test_tampered_replies_through_the_ray_engine_are_dropped_with_their_reasons(tmp_path: Path) -> None:
    # a ClientApp wrapping Corolla's own: partition 2 reports a NaN partition-id (this ended the run with
    # `ValueError: cannot convert float NaN to integer` before), partition 3 an update of 3e38 everywhere.
    # Its own SuperLink: the module's one works in the checkout, and launch() refuses to run another
    # app directory through it (simulations.flower_env.check_managed_superlink)
    app = _tampering_app_dir(tmp_path)
    home = tmp_path / "flwr-home"
    try:
        result, folder = _run(
            _own_flower_home(home), tmp_path, 4,
            ['strategy.name="fedex" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 '
             'train.local-steps=2 adapter.rank=4 eval.max-examples=16'],
            app=app,
        )
    finally:
        _kill_flower_home(home)
    assert result.ok, result.output[-3000:]
    assert "finished:completed" == result.status
    rows = read_rounds(folder / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all((r["clients"], r["dropped"]) == (2, 2) for r in rows[1:])
    assert all(r["dropped/metric-non-finite"] == 1 and r["dropped/update-norm"] == 1 for r in rows[1:])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dropped"] == {"total": 4, "by_reason": {"metric-non-finite": 2, "update-norm": 2}}
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["eval_loss"]) for r in rows[1:])
