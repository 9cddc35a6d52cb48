"""The corolla CLI: every subcommand is wired, config errors stop before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations import cli, listings
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


def test_strategies_prints_a_table_of_the_registrations(capsys: pytest.CaptureFixture[str]) -> None:
    from strategies import registered_strategies

    listing = listings.strategies_listing()
    assert [row[0] for row in listing.rows] == [info.name for info in registered_strategies()]
    for info in registered_strategies():
        row = listing.row(info.name)
        assert row["description"] == info.summary.replace("``", "`")
        assert row["exact"] == ("yes" if info.exact else "no")
        assert row["adapter kinds (auto: first)"] == ", ".join(info.adapter_kinds)
    assert listing.row("fedsb")["exact"] == "yes" and listing.row("fedit")["exact"] == "no"
    assert listing.row("fedsb")["adapter kinds (auto: first)"] == "lora-sb"
    assert (listing.row("fedex")["train.lr auto"], listing.row("fedit")["train.lr auto"]) == ("0.005", "0.02")
    _printed(capsys, "strategies", listing)


def test_tasks_prints_a_table_with_each_tasks_config_section(capsys: pytest.CaptureFixture[str]) -> None:
    from client.tasks.registry import registered_tasks

    listing = listings.tasks_listing()
    assert [row[0] for row in listing.rows] == [info.name for info in registered_tasks()]
    guideq = listing.row("guideq")
    assert (guideq["model kind"], guideq["main metric"], guideq["config section"]) == (
        "sequence-classification", "accuracy", "guideq.*")
    assert listing.row("memorization")["config section"] == "tokenswap.*"
    assert listing.row("safety-arithmetic")["config section"] == "safety.*"
    assert listing.row("topics")["config section"] == "-"
    assert listing.row("topics")["description"].startswith("Five-way news topic classification")
    _printed(capsys, "tasks", listing)


def test_adapters_prints_a_table_with_the_strategies_that_take_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.kind_registry import registered_kinds

    listing = listings.adapters_listing()
    assert [row[0] for row in listing.rows] == [kind.name for kind in registered_kinds()]
    assert {"lora", "ffa", "lora-sb", "abba"} <= {row[0] for row in listing.rows}
    assert listing.row("lora-sb")["strategies"] == "fedsb (auto)"
    assert listing.row("lora-sb")["frozen (sent once)"] == "lora_A, lora_B"
    assert "fedit (auto)" in listing.row("lora")["strategies"] and "fedit" in listing.row("abba")["strategies"]
    assert "(auto)" not in listing.row("abba")["strategies"]
    _printed(capsys, "adapters", listing)


def test_a_registry_that_cannot_be_read_fails_clearly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> listings.Listing:
        raise ImportError("cannot import name 'registered_tasks' from 'client.tasks.registry'")

    monkeypatch.setattr(listings, "tasks_listing", missing)
    assert cli.main(["tasks"]) == 1
    err = capsys.readouterr().err
    assert "corolla tasks: cannot read the registrations" in err and "registered_tasks" in err
    assert cli.main(["strategies"]) == 0  # the other registries still list


def _printed(capsys: pytest.CaptureFixture[str], command: str, listing: listings.Listing) -> None:
    assert cli.main([command]) == 0
    out = capsys.readouterr().out
    assert listing.title in out and all(column in out for column in listing.columns)
    for row in listing.rows:
        line = next(line for line in out.splitlines() if f"│ {row[0]} " in line)
        assert all(cell in line for cell in row[1:] if len(cell) < 40), (row, line)  # short cells are not folded


def test_a_fresh_cli_process_knows_the_plugin_and_strategy_sections() -> None:
    # in a new process nothing has imported the task plugins yet: `corolla config` must load them
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "simulations.cli", "config", "-c", "guideq.turns=2 safety.rhos='0.5'"],
                            capture_output=True, text=True, timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'guideq.turns': 2" in result.stdout and "'safety.rhos': '0.5'" in result.stdout


def test_config_validation_checks_the_strategy_adapter_pairing(capsys: pytest.CaptureFixture[str]) -> None:
    # the contract parses any pairing; the strategies' declarations reject this one before anything runs
    assert cli.main(["config", "-c", 'strategy.name="fedsb" adapter.name="lora"']) == 2
    err = capsys.readouterr().err
    assert "`strategy.name` = 'fedsb' needs `adapter.name` in ['lora-sb']" in err and 'adapter.name="lora-sb"' in err
    assert cli.main(["config", "-c", 'strategy.name="fedsb" adapter.name="auto"']) == 0


def test_config_checks_strategy_task_and_model_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["config", "-c", 'strategy.name="bogus"']) == 2
    assert "unknown strategy 'bogus' in `strategy.name`" in capsys.readouterr().err
    assert cli.main(["config", "-c", 'task.name="bogus"']) == 2
    assert "`task.name` = 'bogus' is not registered" in capsys.readouterr().err
    assert cli.main(["config", "-c", f'model.name="{tmp_path}/no-such-model"']) == 2
    assert "is written as a path but there is no such folder" in capsys.readouterr().err
    assert cli.main(["config", "-c", f'model.name="{tmp_path}"']) == 2  # a folder, but no model in it
    assert "without config.json" in capsys.readouterr().err
    assert cli.main(["config", "-c", 'model.name="not a/model/id"']) == 2
    assert "not a built-in model" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    for good in ("tiny-llama", "smollm2-135m", "HuggingFaceTB/SmolLM2-135M", str(tmp_path)):
        assert cli.main(["config", "-c", f'model.name="{good}"']) == 0, capsys.readouterr().err


def test_a_model_path_is_checked_only_where_the_server_app_runs() -> None:
    from adapters.models import model_name_problem

    assert model_name_problem("/srv/models/llama", local=True) is not None
    assert model_name_problem("/srv/models/llama", local=False) is None  # a deployment's server has its own disk
    assert model_name_problem("bad name!", local=False) is not None


def test_config_refuses_a_delta_no_client_could_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "-c", "privacy.enabled=true privacy.noise-multiplier=1.0 privacy.delta=0.5"]) == 2
    assert "`privacy.delta` = 0.5: Input should be less than 0.01" in capsys.readouterr().err


def test_resume_from_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = find_app_dir()
    monkeypatch.chdir(tmp_path)
    _, overrides = resolve_config(app, ['resume-from="runs/killed"'])
    assert overrides["resume-from"] == str(tmp_path / "runs" / "killed")
    _, overrides = resolve_config(app, [])
    assert "resume-from" not in overrides  # unset stays unset: a fresh run


def test_config_refuses_a_combination_dp_cannot_describe(capsys: pytest.CaptureFixture[str]) -> None:
    dp = "privacy.enabled=true privacy.noise-multiplier=1.0"
    assert cli.main(["config", "-c", f'{dp} task.name="guideq" model.name="tiny-llama"']) == 2
    assert "`guideq.report` = true with `privacy.enabled` = true" in capsys.readouterr().err
    assert cli.main(["config", "-c", f'{dp} task.name="guideq" model.name="tiny-llama" guideq.report=false']) == 0


def test_gpus_per_client_reaches_the_federation_config_and_is_checked() -> None:
    """docs/precision.md §6: --gpus-per-client is Flower's client-resources-num-gpus."""
    import argparse

    from contract import parse_run_config
    from simulations.cli import _resource_problem
    from simulations.launch import federation_config

    assert federation_config(8, 2, 0.25) == "num-supernodes=8 client-resources-num-cpus=2 client-resources-num-gpus=0.25"
    assert federation_config(8, 1, 0.0) == "num-supernodes=8 client-resources-num-cpus=1"
    args = argparse.Namespace(gpus_per_client=0.0, connection=None, ray_address=None)
    assert _resource_problem(parse_run_config({}), args) == ""
    import torch

    if not torch.cuda.is_available():
        args.gpus_per_client = 0.5
        assert "sees no CUDA GPU" in _resource_problem(parse_run_config({}), args)
        args.gpus_per_client = 0.0
        assert "sees no CUDA GPU" in _resource_problem(parse_run_config({"model.device": "cuda"}), args)
    args.gpus_per_client = -1.0
    assert "--gpus-per-client must be between 0 and 64" in _resource_problem(parse_run_config({}), args)
