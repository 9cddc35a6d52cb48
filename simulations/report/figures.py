"""The report's figures (matplotlib, Agg backend): each a function from runs to a saved PNG.

1. ``pareto``: main metric against cumulative bytes (log x), one curve per strategy, set-up bytes
   included: the headline communication-vs-accuracy figure.
2. ``bytes_per_round``: mean bytes per trained round, download and upload, per strategy (log y).
3. ``fedit_deviation``: FedIT's ``dev_rel`` per adapted module and round (FedEx-LoRA, arXiv
   2410.09432 §3: how far averaging A and B separately drifts from the exact update).
4. ``epsilon``: ε per round (max over clients), only when a run used DP.
5. ``wall_time``: seconds per round.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from simulations.report.runs import RunData, headline  # noqa: E402

SIZE = (7.0, 4.2)
DPI = 110


def _new(title: str) -> tuple[Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI, layout="constrained")
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(True, which="both", alpha=0.25)
    return fig, ax


def pareto(runs: list[RunData]) -> Figure:
    fig, ax = _new("Accuracy against communication (set-up included)")
    for run in runs:
        points = [(b, v) for b, v in zip(run.cumulative_bytes(), run.metric(), strict=True) if v is not None and b > 0]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(np.array(xs) / 1e6, ys, marker="o", label=run.label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative MB, down + up, all clients (log)")
    ax.set_ylabel(f"eval {runs[0].main_metric}" if runs else "metric")
    ax.legend(fontsize=8)
    return fig


def bytes_per_round(runs: list[RunData]) -> Figure:
    fig, ax = _new("Bytes per trained round, all clients")
    rows, _ = headline(runs)
    x = np.arange(len(rows))
    down = [r["bytes_per_round_down"] / 1e6 for r in rows]
    up = [r["bytes_per_round_up"] / 1e6 for r in rows]
    ax.bar(x - 0.2, down, 0.4, label="down (server → clients)")
    ax.bar(x + 0.2, up, 0.4, label="up (clients → server)")
    ax.set_xticks(x, [r["strategy"] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("MB per round (log)")
    ax.legend(fontsize=8)
    return fig


def fedit_deviation(runs: list[RunData]) -> Figure:
    fig, ax = _new("FedIT: deviation from exact aggregation, per module")
    dev = next((run.deviation() for run in runs if run.strategy == "fedit" and run.deviation()), {})
    if not dev:
        ax.text(0.5, 0.5, "no FedIT run in this report", ha="center", va="center", transform=ax.transAxes)
        return fig
    matrix = np.array(list(dev.values()))  # (modules, rounds)
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(matrix.shape[1]), [str(t + 1) for t in range(matrix.shape[1])])
    ax.set_yticks(range(len(dev)), [_short(m) for m in dev], fontsize=6)
    ax.set_xlabel("round")
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="‖s(Σp B A − B̄Ā)‖ / ‖sΣp B A‖")
    return fig


def epsilon(runs: list[RunData]) -> Figure:
    fig, ax = _new("Privacy spent: ε per round (max over clients)")
    for run in runs:
        points = [(row["round"], row["epsilon"]) for row in run.rounds if "epsilon" in row]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=run.label)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ε")
    ax.legend(fontsize=8)
    return fig


def wall_time(runs: list[RunData]) -> Figure:
    fig, ax = _new("Wall time per round")
    for run in runs:
        trained = run.rounds[1:]
        ax.plot([r["round"] for r in trained], [r.get("wall_s", np.nan) for r in trained], marker="o", label=run.label)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    return fig


def _short(module: str) -> str:
    """``base_model.model.bert.encoder.layer.3.attention.self.query`` -> ``layer.3...query``."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part in ("layer", "layers", "h") and i + 1 < len(parts):
            return ".".join([part, parts[i + 1], parts[-1]])
    return ".".join(parts[-2:])


FIGURES: dict[str, tuple[str, Callable[[list[RunData]], Figure]]] = {
    "pareto": ("Accuracy vs cumulative bytes", pareto),
    "bytes_per_round": ("Bytes per round", bytes_per_round),
    "fedit_deviation": ("FedIT deviation from exact aggregation", fedit_deviation),
    "epsilon": ("Privacy: ε per round", epsilon),
    "wall_time": ("Wall time per round", wall_time),
}


def save_figures(runs: list[RunData], out: Path) -> dict[str, Path]:
    """Write every figure that applies (ε only with DP) as ``<name>.png``; returns name -> path."""
    has_dp = any("epsilon" in row for run in runs for row in run.rounds)
    written = {}
    for name, (_, make) in FIGURES.items():
        if name == "epsilon" and not has_dp:
            continue
        fig = make(runs)
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written[name] = path
    return written
