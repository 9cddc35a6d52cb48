"""The DP step benchmark runs with --quick and writes a row per adapter kind (timings never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.benchmarks import dp_step


def test_quick_benchmark_times_every_adapter_kind_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dp.json"
    dp_step.main(["--quick", "--batch-size", "4", "--rank", "2", "--out", str(out)])
    assert "DP/plain" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["benchmark"] == "dp_step" and result["quick"] is True
    assert [r["adapter"] for r in result["rows"]] == ["lora", "ffa", "lora-sb"]
    by_kind = {r["adapter"]: r for r in result["rows"]}
    for row in result["rows"]:
        assert row["plain_s"] > 0 and row["dp_s"] > 0
        assert row["ratio"] == pytest.approx(row["dp_s"] / row["plain_s"])
    # the trainable set is what each kind promises: LoRA-SB's r x r R < FFA's B < LoRA's A and B
    assert by_kind["lora-sb"]["trainable_params"] < by_kind["ffa"]["trainable_params"] < by_kind["lora"]["trainable_params"]
