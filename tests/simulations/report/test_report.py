"""The report rendered from real (in-process, tiny-llama) run folders: every table and figure present."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from client.app import app as client_app
from server.app import run
from simulations.report import RunFolderError, headline, load_run, write_report
from simulations.report.runs import bytes_to_reach
from contract import parse_run_config
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

RUNS = {
    "fedit": {"strategy.name": "fedit"},
    "fedsb": {"strategy.name": "fedsb"},
    "fedit-dp": {"strategy.name": "fedit", "privacy.enabled": True, "privacy.noise-multiplier": 1.0},
}


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("runs")
    folders = []
    for name, extra in RUNS.items():
        values = {**TINY_RUN, "train.local-steps": 2, "eval.max-examples": 16, "output-dir": str(out), "run-name": name, **extra}
        folders.append(run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values)).path)
    return folders


def test_headline_numbers_come_from_the_run_folders(run_folders: list[Path]) -> None:
    runs = [load_run(p) for p in run_folders]
    rows, target = headline(runs, target=0.0)
    assert [r["strategy"] for r in rows] == ["fedit", "fedsb", "fedit+DP"]
    for run_data, row in zip(runs, rows, strict=True):
        ledger = list(csv.DictReader((run_data.path / "ledger.csv").open()))
        assert row["bytes_total"] == sum(int(r["bytes"]) for r in ledger)  # every metered byte, set-up included
        assert row["bytes_to_target"] == run_data.cumulative_bytes()[0]  # target 0 is reached at round 0
    fedsb = rows[1]
    assert fedsb["bytes_setup"] > 0 and rows[0]["bytes_setup"] == 0  # B and A once
    assert fedsb["bytes_per_round_up"] < rows[0]["bytes_per_round_up"]  # r x r R only
    assert rows[0]["total_vs_fedit"] == 1.0 and rows[2]["epsilon"] > 0
    assert bytes_to_reach(runs[0], 2.0) is None  # a target nobody reaches


def test_report_folder_has_every_table_and_figure(run_folders: list[Path], tmp_path: Path) -> None:
    index = write_report([load_run(p) for p in run_folders], tmp_path / "report")
    out = index.parent
    names = {"pareto", "bytes_per_round", "fedit_deviation", "epsilon", "wall_time"}
    assert {p.stem for p in out.glob("*.png")} == names
    page = index.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(names)  # self-contained: every figure embedded
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert "<table>" in page and page.count("<tr") == 1 + 3 and "http" not in page.split("<body>")[1]
    report_md = (out / "report.md").read_text()
    assert "| fedsb |" in report_md and "MB one-time" in report_md
    assert all(f"({name}.png)" in report_md for name in names)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["strategy"] for r in rows] == ["fedit", "fedsb", "fedit+DP"]


def test_no_epsilon_figure_without_dp_and_clear_errors_for_bad_folders(run_folders: list[Path], tmp_path: Path) -> None:
    index = write_report([load_run(run_folders[0])], tmp_path / "plain")
    assert not (index.parent / "epsilon.png").exists()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({}))
    with pytest.raises(RunFolderError, match="summary.json"):
        load_run(tmp_path / "half")


def test_mixed_rank_runs_get_a_ranks_column_and_bytes_per_rank_class(run_folders: list[Path], tmp_path: Path) -> None:
    values = {**TINY_RUN, "strategy.name": "hetlora", "adapter.ranks": "2,4", "train.local-steps": 1, "num-server-rounds": 1,
              "eval.central": False, "output-dir": str(tmp_path), "run-name": "mixed"}
    mixed = load_run(run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values)).path)
    rows, _ = headline([load_run(run_folders[0]), mixed], target=0.0)
    assert [r["ranks"] for r in rows] == ["4", "2,4"]
    by_rank = mixed.bytes_by_rank()
    assert sorted(by_rank) == [2, 4] and all(v["clients"] == 1 for v in by_rank.values())
    assert by_rank[4]["up"] > by_rank[2]["up"] and by_rank[4]["down"] > by_rank[2]["down"]
    ledger = list(csv.DictReader((mixed.path / "ledger.csv").open()))
    ups = sorted(int(r["bytes"]) for r in ledger if r["phase"] == "train" and r["direction"] == "up")
    assert sorted(v["up"] for v in by_rank.values()) == ups  # one round: each class's one client's upload
    index = write_report([mixed], tmp_path / "report")
    assert "Bytes per rank class" in (index.parent / "report.md").read_text() and "Bytes per rank class" in index.read_text()


def test_the_personalised_score_is_reported_where_a_run_has_one(run_folders: list[Path], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "personal"
    shutil.copytree(run_folders[0], folder)
    rows = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    rows[-1]["fed_eval_personal_exact_match"] = 0.25  # what FedSA-LoRA's federated evaluation writes
    (folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got, _ = headline([load_run(run_folders[0]), load_run(folder)], target=0.0)
    assert got[0]["personal_final"] is None and got[1]["personal_final"] == 0.25
    assert "final personal exact_match" in (write_report([load_run(folder)], tmp_path / "r") .parent / "report.md").read_text()
