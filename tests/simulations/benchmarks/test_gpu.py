"""The GPU check script runs end to end on the CPU (``--smoke``) and prints its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.benchmarks.gpu import COLUMNS, main


def test_the_smoke_run_prints_every_column_and_an_exact_fedex_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu.json"
    assert main(["--smoke", "--only", "fedex", "--bases", "bfloat16", "--dp", "off", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert " | ".join(COLUMNS) in printed
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["model"], row["base"], row["strategy"], row["dp"], row["note"]) == ("tiny-llama", "bfloat16", "fedex", "off", "")
    assert row["client_rounds_s"] > 0 and row["tok_s"] > 0 and row["plain_tok_s"] > 0 and row["ratio"] > 0
    assert 0 <= row["exact_rel_error"] <= 1e-6
    assert " | ".join(["tiny-llama", "bfloat16", "fedex", "off"]) in printed


def test_without_a_gpu_the_full_run_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full run would start")
    assert main(["--out", "unused.json"]) == 2
    assert "--smoke" in capsys.readouterr().out
