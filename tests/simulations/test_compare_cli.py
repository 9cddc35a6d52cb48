"""`corolla compare` / `corolla report` on the command line: checks before any run, and a re-render."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations import cli
from simulations.compare import ROUND_LINE
from tests.simulations.report.test_report import run_folders  # noqa: F401 (module fixture)


def test_compare_refuses_unknown_strategies_and_bad_overrides_before_running(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["compare", "--strategies", "fedit,nope", "--out", str(tmp_path)]) == 2
    assert "nope not registered" in capsys.readouterr().err
    assert cli.main(["compare", "--strategies", "fedit", "--rank", "0", "--out", str(tmp_path)]) == 2
    assert "adapter.rank" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_report_rerenders_from_run_folders(run_folders: list[Path], tmp_path: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", *map(str, run_folders), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file() and "report of 3 runs" in capsys.readouterr().out
    assert cli.main(["report"]) == 2
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not a complete Corolla run folder" in capsys.readouterr().err


def test_the_progress_parser_matches_the_servers_round_lines() -> None:
    assert ROUND_LINE.match("       1/3         10          0     1.2875     1.3814     0.8783     3.0780")
    assert not ROUND_LINE.match("INFO :      [ROUND 1/3]")
