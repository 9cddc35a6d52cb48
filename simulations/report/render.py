"""Write the report folder: ``results.csv``, ``report.md``, ``index.html`` (self-contained) and PNGs.

``index.html`` embeds every figure as a base64 PNG and its own CSS, so it reads offline and can be
mailed as one file. The tables state, per strategy: final and best metric, bytes up/down, one-time
set-up bytes, bytes to reach the target metric, and ratios to FedIT.
"""

from __future__ import annotations

import base64
import csv
import html
import time
from pathlib import Path
from typing import Any

from simulations.report.figures import FIGURES, save_figures
from simulations.report.runs import RunData, headline, rank_class_rows

COLUMNS = [
    ("strategy", "strategy"),
    ("ranks", "ranks"),
    ("final", "final {metric}"),
    ("best", "best {metric}"),
    ("personal_final", "final personal {metric}"),
    ("bytes_per_round_down", "MB/round down"),
    ("bytes_per_round_up", "MB/round up"),
    ("bytes_setup", "MB one-time"),
    ("bytes_total", "MB total"),
    ("total_vs_fedit", "total ÷ FedIT"),
    ("bytes_to_target", "MB to target"),
    ("to_target_vs_fedit", "to target ÷ FedIT"),
    ("epsilon", "ε"),
    ("wall_s", "wall s"),
]
CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#1d2433}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde2ea;padding-bottom:.2rem}
.meta{color:#5a6478;font-size:.9rem} table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.6rem 0}
th,td{padding:.35rem .55rem;text-align:right;border-bottom:1px solid #e6e9ef} th{background:#f4f6f9;font-weight:600}
td:first-child,th:first-child{text-align:left} tr.best td{background:#eef8f0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1rem}
figure{margin:0;border:1px solid #e6e9ef;border-radius:6px;padding:.5rem;background:#fff} figure img{width:100%}
figcaption{font-size:.85rem;color:#5a6478} code{background:#f4f6f9;padding:0 .25rem;border-radius:3px}
"""


def _cell(key: str, value: float | str | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if key.startswith("bytes"):
        return f"{value / 1e6:,.3f}"
    if key.endswith("vs_fedit"):
        return f"{value:.3g}×"
    if isinstance(value, float):
        return f"{value:.4f}" if key in ("final", "best", "personal_final", "epsilon") else f"{value:.1f}"
    return str(value)


def _headers(metric: str) -> list[str]:
    return [title.format(metric=metric) for _, title in COLUMNS]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Raw numbers (bytes, not MB), one row per strategy."""
    keys = [key for key, _ in COLUMNS] + ["rounds", "bytes_up", "bytes_down"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict[str, Any]], metric: str) -> str:
    """The headline table as GitHub Markdown (also what a closing note embeds)."""
    lines = ["| " + " | ".join(_headers(metric)) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(k, row.get(k)) for k, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def rank_class_table(runs: list[RunData]) -> str:
    """Mixed-rank runs: bytes one client of each rank class moved per round (Markdown; empty if none)."""
    rows = rank_class_rows(runs)
    if not rows:
        return ""
    lines = ["| strategy | rank | clients | MB/round down per client | MB/round up per client |", "|---|---|---|---|---|"]
    lines += [f"| {r['strategy']} | {r['rank']} | {r['clients']} | {r['down'] / 1e6:,.3f} | {r['up'] / 1e6:,.3f} |" for r in rows]
    return "\n".join(lines)


def _context(runs: list[RunData]) -> dict[str, Any]:
    first = runs[0].config
    return {
        "model": first.get("model.name"), "task": first.get("task.name"), "rounds": first.get("num-server-rounds"),
        "rank": first.get("adapter.rank"), "seed": first.get("seed"), "partitioner": first.get("data.partitioner"),
        "alpha": first.get("data.alpha"),
    }


def _html_rank_classes(runs: list[RunData]) -> str:
    rows = rank_class_rows(runs)
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("strategy", "rank", "clients", "MB/round down per client", "MB/round up per client"))
    body = "".join(
        f"<tr><td>{html.escape(r['strategy'])}</td><td>{r['rank']}</td><td>{r['clients']}</td>"
        f"<td>{r['down'] / 1e6:,.3f}</td><td>{r['up'] / 1e6:,.3f}</td></tr>" for r in rows
    )
    return f"<h2>Bytes per rank class</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(runs: list[RunData], out: Path, *, target: float | None = None, title: str = "Corolla: communication vs accuracy") -> Path:
    """Render the whole report into ``out``; returns the path of ``index.html``."""
    if not runs:
        raise ValueError("a report needs at least one run folder")
    out.mkdir(parents=True, exist_ok=True)
    rows, target = headline(runs, target)
    metric = runs[0].main_metric
    pngs = save_figures(runs, out)
    write_csv(rows, out / "results.csv")
    ctx = _context(runs)
    setting = (f"{ctx['model']} on `{ctx['task']}`, {ctx['rounds']} rounds, rank {ctx['rank']}, "
               f"{ctx['partitioner']} split (α = {ctx['alpha']}), seed {ctx['seed']}")
    table = markdown_table(rows, metric)
    note = (f"Target {metric}: {target:.4f} (95% of the best final value unless set). Bytes are metered record "
            "bytes of every message, both directions, all clients; one-time set-up traffic (Fed-SB's B and A) "
            "is included in totals and in the curves.")
    figure_md = "\n".join(f"![{FIGURES[name][0]}]({path.name})" for name, path in pngs.items())
    by_rank = rank_class_table(runs)
    by_rank_md = f"## Bytes per rank class\n\n{by_rank}\n\n" if by_rank else ""
    (out / "report.md").write_text(f"# {title}\n\n{setting}\n\n{table}\n\n{note}\n\n{by_rank_md}{figure_md}\n")
    best = max((r["final"] for r in rows if r["final"] is not None), default=None)
    body_rows = "".join(
        f"<tr class=\"{'best' if row['final'] is not None and row['final'] == best else ''}\">"
        + "".join(f"<td>{html.escape(_cell(k, row.get(k)))}</td>" for k, _ in COLUMNS) + "</tr>"
        for row in rows
    )
    figures = "".join(
        f"<figure><img alt=\"{html.escape(FIGURES[name][0])}\" src=\"data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}\"><figcaption>{html.escape(FIGURES[name][0])}</figcaption></figure>"
        for name, path in pngs.items()
    )
    runs_list = "".join(f"<li><code>{html.escape(run.label)}</code>: {html.escape(str(run.path))}</li>" for run in runs)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(setting.replace('`', ''))} · generated {time.strftime('%Y-%m-%d %H:%M')}</p>
<h2>Headline</h2><table><thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in _headers(metric))}</tr></thead>
<tbody>{body_rows}</tbody></table><p class="meta">{html.escape(note)}</p>
{_html_rank_classes(runs)}<h2>Figures</h2><div class="grid">{figures}</div>
<h2>Runs</h2><ul class="meta">{runs_list}</ul></body></html>"""
    index = out / "index.html"
    index.write_text(page)
    return index
