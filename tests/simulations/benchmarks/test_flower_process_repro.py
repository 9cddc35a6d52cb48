"""The Flower-only deployment reproduction: the echo app runs simulated and deployed (slow: TLS deployment)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from simulations.benchmarks import flower_process_repro


def test_the_echo_app_is_a_flower_app_without_corolla_code() -> None:
    app = flower_process_repro.ECHO_APP
    project = tomllib.loads((app / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["components"] == {"serverapp": "echo_app:server_app",
                                                             "clientapp": "echo_app:client_app"}
    source = (app / "echo_app.py").read_text()
    imports = [line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(name.split(".")[0] in {"__future__", "json", "time", "pathlib", "flwr"} for name in imports), imports


def test_the_steady_round_leaves_out_the_first() -> None:
    assert flower_process_repro.steady([9.0, 1.0, 3.0]) == 2.0
    assert flower_process_repro.steady([4.0]) == 4.0


@pytest.mark.slow
def test_both_engines_answer_every_message_and_the_table_is_written(tmp_path: Path) -> None:
    out = tmp_path / "repro.json"
    result = flower_process_repro.main(["--nodes", "2", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    (cell,) = result["cells"]
    for mode in ("simulation", "deployment"):
        assert cell[mode]["nodes"] == 2 and len(cell[mode]["round_s"]) == 2 and cell[mode]["steady_round_s"] > 0
    assert cell["difference_s"] == pytest.approx(cell["deployment"]["steady_round_s"] - cell["simulation"]["steady_round_s"],
                                                 abs=1e-9)
