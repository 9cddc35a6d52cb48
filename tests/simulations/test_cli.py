"""The corolla CLI: every subcommand is wired, config errors stop before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations import cli
from simulations.launch import find_app_dir, flower_env, resolve_config, toml_overrides


def test_every_command_has_a_parser_and_a_handler() -> None:
    parser = cli.build_parser()
    for name in cli.COMMANDS:
        args = parser.parse_args([name])
        assert args.command == name
        assert callable(cli.COMMANDS[name][0])


def test_config_lists_every_key_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "adapter.rank" in out and "LoRA rank r" in out and "num-server-rounds" in out


def test_config_validation_reports_errors_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "-c", "adapter.rank=0 bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "`adapter.rank` = 0" in err and "unknown config key `bogus`" in err


def test_run_with_a_bad_config_exits_2_before_starting_flower(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "-c", 'data.partitioner="zipf"']) == 2
    assert "`data.partitioner` = 'zipf'" in capsys.readouterr().err


def test_run_rejects_unknown_strategy_and_task_names_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "-c", 'strategy.name="fedavgx"']) == 2
    assert "strategy.name" in capsys.readouterr().err
    assert cli.main(["run", "-c", 'task.name="nope"']) == 2
    assert "task.name" in capsys.readouterr().err


def test_output_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = find_app_dir()
    monkeypatch.chdir(tmp_path)
    config, overrides = resolve_config(app, ['output-dir="out" adapter.rank=4'])
    assert overrides["output-dir"] == str(tmp_path / "out")
    assert overrides["adapter.rank"] == 4 and config.adapter.rank == 4


def test_overrides_round_trip_through_flowers_parser() -> None:
    from flwr.common.config import parse_config_args

    values = {"adapter.rank": 4, "train.lr": 0.01, "model.name": "tiny llama/x", "strategy.weighted": False}
    assert parse_config_args([toml_overrides(values)]) == values


def test_flower_env_disables_runtime_installs_and_isolates_the_superlink() -> None:
    env = flower_env({"HOME": "/home/u"})
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == "/home/u/.corolla/flwr"
    assert env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] != "39091"


def test_a_named_connection_is_looked_up_in_the_users_flower_home() -> None:
    """``--connection`` names a connection in the user's ``FLWR_HOME`` (``~/.flwr``), not Corolla's own."""
    assert "FLWR_HOME" not in flower_env({"HOME": "/home/u"}, managed=False)
    assert flower_env({"HOME": "/home/u", "FLWR_HOME": "/srv/f"}, managed=False)["FLWR_HOME"] == "/srv/f"
    assert flower_env({"HOME": "/home/u"}, managed=False)["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
