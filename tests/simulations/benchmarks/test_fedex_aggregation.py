"""The aggregation benchmark runs with --quick and reports tiny errors (timings never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.benchmarks import fedex_aggregation

F64 = ("naive_f64", "stacked_f64", "pivot_f64")
F32 = ("stacked_f32", "pivot_f32")


def test_quick_benchmark_writes_json_with_small_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    out = tmp_path / "bench" / "fedex.json"
    fedex_aggregation.main(["--quick", "--out", str(out)])
    # Assert
    assert "naive/this" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["benchmark"] == "fedex_aggregation" and result["quick"] is True
    assert len(result["fedex"]) == 4 and len(result["fedsb"]) == 3
    for row in result["fedex"]:
        assert {"m", "n", "r", "K", "max_abs_residual", "methods", "ratio_naive_over_stacked",
                "ratio_naive_over_pivot"} <= set(row)
        assert set(row["methods"]) == set(F64 + F32)
        res = row["max_abs_residual"]
        assert res > 0
        for name, cell in row["methods"].items():
            assert {"seconds", "max_abs_err", "max_abs_err_ld"} <= set(cell)
            assert cell["seconds"] > 0
            limit = 1e-10 if name in F64 else 1e-2  # fp32 GEMMs: ~1e-4 (stacked) to ~1e-6 (pivot)
            assert cell["max_abs_err"] <= limit * res, name
            assert cell["max_abs_err_ld"] <= limit * res, name
        assert row["methods"]["naive_f64"]["max_abs_err"] == 0.0  # it is the float64 reference
        assert row["methods"]["pivot_f32"]["max_abs_err_ld"] <= 1e-4 * res
    for row in result["fedsb"]:
        assert {"r", "K", "seconds_f64", "seconds_f32", "max_abs_err_f32"} <= set(row)
        assert row["max_abs_err_f32"] < 1e-5
