"""The ABBA reconstruction benchmark runs with --quick: every family x method, LoRA reaches the SVD optimum,
and ABBA at LoRA's budget goes where no rank-r update can on the element-wise-product target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from simulations.benchmarks import abba_reconstruct as bench


def test_quick_benchmark_fits_every_family_and_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    out = tmp_path / "bench" / "abba.json"
    bench.main(["--quick", "--out", str(out)])
    # Assert: the table and the JSON hold every family x method
    printed = capsys.readouterr().out
    assert "SVD-optimum" in printed and "ABBA" in printed and "HiRA" in printed
    result = json.loads(out.read_text())
    assert result["benchmark"] == "abba_reconstruct" and result["quick"] is True
    size, rank = result["size"], result["rank"]
    assert result["abba_ranks"] == [rank // 2, rank // 2]
    rows = {row["family"]: row for row in result["rows"]}
    assert list(rows) == list(bench.FAMILIES)
    for name, row in rows.items():
        assert set(row["methods"]) == set(bench.METHODS)
        for method, cell in row["methods"].items():
            assert math.isfinite(cell["rel_error"]) and 0 <= cell["rel_error"] < 1, (name, method)
            assert cell["params"] == rank * (size + size), (name, method)  # the equal budget
        # Eckart-Young: no rank-r update beats the truncated SVD, so LoRA never does
        lora = row["methods"]["lora"]
        assert lora["rel_error"] >= row["svd_optimum"] - 1e-9 and lora["rank_of_delta"] <= rank
        assert row["target_rank"] > rank  # otherwise the comparison is trivial
    # Adam-LoRA converges to the optimum it must reach
    for name in ("gaussian", "low-rank"):
        assert rows[name]["methods"]["lora"]["rel_error"] <= rows[name]["svd_optimum"] + 5e-3, name
    # ABBA at r1 = r2 = r/2 beats LoRA on the element-wise product, and below the rank-r line, which a
    # LoRA-shaped ABBA (rank <= r1 + r2 = r) could never cross
    product = rows["hadamard-product"]
    abba = product["methods"]["abba"]
    assert abba["rel_error"] < 0.9 * product["methods"]["lora"]["rel_error"]
    assert abba["rel_error"] < product["svd_optimum"]
    assert abba["rank_of_delta"] > rank
    # HiRA's W0 ⊙ (BA) is not rank-limited either
    assert rows["gaussian"]["methods"]["hira"]["rank_of_delta"] > rank


def test_abba_starts_at_zero_from_w0s_rank_r1_svd_and_parametrises_a_hadamard_product() -> None:
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(12, 10, generator=gen, dtype=torch.float64)
    b1, a1, b2, a2 = bench.init_factors("abba", w0, 6, gen)
    assert [f.shape for f in (b1, a1, b2, a2)] == [(12, 3), (3, 10), (12, 3), (3, 10)]
    u, s, vh = torch.linalg.svd(w0)
    torch.testing.assert_close(b1 @ a1, u[:, :3] @ torch.diag(s[:3]) @ vh[:3])  # docs/algorithms.md §10.2
    assert torch.count_nonzero(b2) == 0 and bool((a2.abs() <= math.sqrt(6 / 10)).all())
    assert torch.count_nonzero(bench.delta("abba", [b1, a1, b2, a2], w0)) == 0
    b2 = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(bench.delta("abba", [b1, a1, b2, a2], w0), (b1 @ a1) * (b2 @ a2))
    torch.testing.assert_close(bench.delta("hira", [b2, a2], w0), w0 * (b2 @ a2))
    assert bench.numerical_rank(bench.delta("abba", [b1, a1, b2, a2], w0)) == 9  # r1 * r2 > r1 + r2


def test_svd_optimum_is_the_eckart_young_tail() -> None:
    target = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert bench.svd_optimum(target, 1) == pytest.approx(math.sqrt(5 / 14))
    assert bench.svd_optimum(target, 3) == 0.0
