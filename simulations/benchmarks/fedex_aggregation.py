"""Benchmark the exact FedEx-LoRA residual paths and Fed-SB's latent average (numpy, CPU).

FedEx-LoRA (``docs/algorithms.md §4.2``) needs ``s·(Σ p_i B_i A_i − B̄Ā): (m, n)`` per module.
Timed paths (:func:`strategies.maths.residual.fedex_residual`):

- ``naive_f64``: the definition, K rank-r dense products then ``− B̄Ā`` (memory-bound);
- ``stacked_f64`` / ``_f32``: one GEMM ``[B_1 … B_K, B̄]·s[p_1 A_1; …; −Ā]``, inner ``(K+1) r``;
- ``pivot_f64`` / ``_f32``: one GEMM over the pivot factors, inner ``(K−1) r``, no cancellation.

Errors: ``max_abs_err`` against the float64 definition (``naive_f64``) over the whole matrix, and
``max_abs_err_ld`` against an extended-precision (``np.longdouble``) evaluation on sampled entries,
which also shows the naive path's own round-off. Client factors are float32 values (what clients
send), so every path starts from the same exact inputs. Timings are the best of a few runs.

Usage: ``python -m simulations.benchmarks.fedex_aggregation [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from strategies.maths.latent import fedsb_aggregate
from strategies.maths.residual import DenseMethod, fedex_residual
from simulations.benchmarks._output import write_result

# FedEx: m = n in sizes, K in clients, rank r; Fed-SB: r = sb_rank, K in sb_clients
FULL: dict[str, Any] = dict(
    sizes=[1024, 4096], clients=[10, 50], rank=16, sb_rank=200, sb_clients=[10, 50, 100, 250]
)
QUICK: dict[str, Any] = dict(
    sizes=[64, 128], clients=[3, 6], rank=4, sb_rank=16, sb_clients=[3, 6, 12]
)
SCALE = 2.0
SAMPLED_ENTRIES = 2048
METHODS: dict[str, tuple[DenseMethod, type[np.floating]]] = {
    "naive_f64": ("naive", np.float64),
    "stacked_f64": ("stacked", np.float64),
    "pivot_f64": ("factored", np.float64),
    "stacked_f32": ("stacked", np.float32),
    "pivot_f32": ("factored", np.float32),
}


def _best_time(
    fn: Callable[[], Any], budget_s: float = 1.0, max_runs: int = 3
) -> tuple[float, Any]:
    """Best wall time of up to ``max_runs`` calls, stopping once ``budget_s`` is spent."""
    best, out, spent = float("inf"), None, 0.0
    for _ in range(max_runs):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best, out


def _clients(
    rng: np.random.Generator, k: int, m: int, n: int, r: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """K clients' factors (float32 values) around a common start, as after one local round."""
    f32 = np.float32
    a0 = rng.standard_normal((r, n), dtype=f32) / f32(np.sqrt(n))  # (r, n)
    b0 = rng.standard_normal((m, r), dtype=f32) * f32(0.01)  # (m, r)
    a = [a0 + f32(0.1 / np.sqrt(n)) * rng.standard_normal((r, n), dtype=f32) for _ in range(k)]
    b = [b0 + f32(0.001) * rng.standard_normal((m, r), dtype=f32) for _ in range(k)]
    return a, b  # each A_i: (r, n), B_i: (m, r)


def _sampled_reference(
    a: list[np.ndarray], b: list[np.ndarray], p: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``s·ΔW_res`` at entries ``(rows[j], cols[j])`` in ``np.longdouble`` (covariance form)."""
    ld = np.longdouble
    pl = p.astype(ld)  # (K,)
    a_s = np.stack([x[:, cols] for x in a]).astype(ld)  # (K, r, S)
    b_s = np.stack([x[rows, :] for x in b]).astype(ld)  # (K, S, r)
    a_bar = np.einsum("k,krs->rs", pl, a_s)  # (r, S)
    b_bar = np.einsum("k,ksr->sr", pl, b_s)  # (S, r)
    cov = np.einsum("k,ksr,krs->s", pl, b_s - b_bar, a_s - a_bar)  # (S,)
    return ld(SCALE) * cov


def bench_fedex(m: int, k: int, r: int, seed: int) -> dict[str, Any]:
    """Time and error of every residual path for one ``m = n`` module with K clients."""
    rng = np.random.default_rng(seed)
    a32, b32 = _clients(rng, k, m, m, r)
    a64, b64 = [x.astype(np.float64) for x in a32], [x.astype(np.float64) for x in b32]
    p = np.full(k, 1.0 / k)
    rows, cols = rng.integers(0, m, SAMPLED_ENTRIES), rng.integers(0, m, SAMPLED_ENTRIES)
    exact = _sampled_reference(a64, b64, p, rows, cols)  # (S,)
    reference: np.ndarray | None = None
    results: dict[str, dict[str, float]] = {}
    for name, (method, dtype) in METHODS.items():
        a, b = (a64, b64) if dtype is np.float64 else (a32, b32)
        call = partial(fedex_residual, a, b, p, SCALE, method=method, dtype=dtype)
        seconds, res = _best_time(call)  # res: (m, n)
        if reference is None:
            reference = res  # naive_f64 runs first: the float64 definition
        err_ld = np.abs(res[rows, cols].astype(np.longdouble) - exact).max()
        results[name] = {
            "seconds": seconds,
            "max_abs_err": float(np.abs(res.astype(np.float64) - reference).max()),
            "max_abs_err_ld": float(err_ld),
        }
        del res
    assert reference is not None
    naive = results["naive_f64"]["seconds"]
    return {
        "m": m,
        "n": m,
        "r": r,
        "K": k,
        "max_abs_residual": float(np.abs(reference).max()),
        "methods": results,
        "ratio_naive_over_stacked": naive / results["stacked_f64"]["seconds"],
        "ratio_naive_over_pivot": naive / results["pivot_f64"]["seconds"],
    }


def bench_fedsb(r: int, k: int, seed: int) -> dict[str, Any]:
    """Time of one module's Fed-SB average ``Σ p_i R_i`` (float64 and float32) for K clients."""
    rng = np.random.default_rng(seed)
    latents = list(rng.standard_normal((k, r, r), dtype=np.float32))  # each (r, r)
    p = np.full(k, 1.0 / k)
    t64, ref = _best_time(lambda: fedsb_aggregate(latents, p, dtype=np.float64), 0.5, 5)  # (r, r)
    t32, got = _best_time(lambda: fedsb_aggregate(latents, p, dtype=np.float32), 0.5, 5)  # (r, r)
    return {
        "r": r,
        "K": k,
        "seconds_f64": t64,
        "seconds_f32": t32,
        "max_abs_err_f32": float(np.abs(got.astype(np.float64) - ref).max()),
        "params_per_client": r * r,
    }


def run(quick: bool, seed: int = 0) -> dict[str, Any]:
    """Every benchmark case; the JSON-able result."""
    grid = QUICK if quick else FULL
    fedex = [bench_fedex(m, k, grid["rank"], seed) for m in grid["sizes"] for k in grid["clients"]]
    fedsb = [bench_fedsb(grid["sb_rank"], k, seed) for k in grid["sb_clients"]]
    return {
        "benchmark": "fedex_aggregation",
        "quick": quick,
        "seed": seed,
        "scale": SCALE,
        "numpy": np.__version__,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "fedex": fedex,
        "fedsb": fedsb,
    }


def format_table(result: dict[str, Any]) -> str:
    """Plain-text tables of the result."""
    lines = [
        "FedEx-LoRA residual s·(Σ p_i B_i A_i − B̄Ā), one module m = n, p_i = 1/K",
        f"{'m=n':>5} {'K':>3} {'r':>3}  {'method':<12} {'seconds':>9} {'naive/this':>10} "
        f"{'err vs f64':>10} {'err vs ld':>10} {'|res| max':>9}",
    ]
    for row in result["fedex"]:
        naive = row["methods"]["naive_f64"]["seconds"]
        for name, c in row["methods"].items():
            lines.append(
                f"{row['m']:>5} {row['K']:>3} {row['r']:>3}  {name:<12} {c['seconds']:9.4f} "
                f"{naive / c['seconds']:9.1f}x {c['max_abs_err']:10.1e} "
                f"{c['max_abs_err_ld']:10.1e} {row['max_abs_residual']:9.1e}"
            )
    lines += [
        "",
        "Fed-SB Σ p_i R_i, one module",
        f"{'r':>4} {'K':>4} {'f64 ms':>9} {'f32 ms':>9} {'f32 err':>9}",
    ]
    for row in result["fedsb"]:
        lines.append(
            f"{row['r']:>4} {row['K']:>4} {1e3 * row['seconds_f64']:9.3f} "
            f"{1e3 * row['seconds_f32']:9.3f} {row['max_abs_err_f32']:9.1e}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; prints the tables and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/fedex_aggregation.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.quick, args.seed)
    print(format_table(result))
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
