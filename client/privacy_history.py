"""The node's DP accountant history on its own disk, so a SuperNode restart cannot reset ε.

Flower 1.42 keeps ``Context.state`` in the SuperNode's memory only: a restarted node starts with an
empty context, and an accountant restored from it would start again at ε = 0 and could spend the
whole budget a second time (``docs/privacy.md §11``). So after every successful DP round the node
also writes its history (``privacy.accounting``'s ``(σ, q, steps)`` entries, a few plain numbers)
as JSON to

    ``<state-dir>/run-<run id>/partition-<partition-id>.json``

where ``state-dir`` is a node-config key (``--node-config 'state-dir="/var/lib/corolla"'``, a TOML string; default
``.corolla-node-state`` under the working directory of the process that runs the ClientApp). Before
a DP round a node whose context holds no history reads it back from there.

The server sends every node the ε it last reported (``EPSILON_SPENT`` in the train instruction). A
node whose history is missing or spends less than that refuses to train with
:class:`HistoryMissing` (``PRIVACY_HISTORY_MISSING``): it has lost the record of ε it spent, and
training on would understate ε. JSON only, never pickle; written to a temporary file, fsynced and
renamed, so a crash leaves the old or the new history, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flwr.app import Context

from privacy import STATE_KEY, epsilon_of, load_history, save_history

STATE_DIR = "state-dir"  # node-config key
DEFAULT_STATE_DIR = ".corolla-node-state"  # relative: under the ClientApp process's working directory
FORMAT = "corolla.privacy-history/1"
RELATIVE_TOLERANCE = 1e-9  # the node recomputes the very ε it reported (same history, same δ): equal up to rounding


class HistoryMissing(RuntimeError):
    """This node's accountant history is missing or older than the ε the server saw it report."""


def history_path(context: Context, partition_id: int) -> Path:
    """Where this node keeps its history for this run (see the module docstring)."""
    root = Path(str(context.node_config.get(STATE_DIR, DEFAULT_STATE_DIR))).expanduser()
    if not root.is_absolute():
        root = Path.cwd() / root
    return root / f"run-{context.run_id}" / f"partition-{partition_id}.json"


def _read(path: Path) -> tuple[str, list[tuple[float, float, int]]]:
    try:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        lists = [data[key] for key in ("noise-multiplier", "sample-rate", "steps")]
        if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
            raise ValueError("its noise-multiplier, sample-rate and steps lists differ in length")
        return str(data["mechanism"]), [(float(s), float(q), int(n)) for s, q, n in zip(*lists, strict=True)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"the DP accountant history {path} cannot be read ({exc}); restore it from a backup, or start a new run"
        ) from exc


def restore_history(context: Context, *, partition_id: int, mechanism: str) -> None:
    """Put the history saved on disk into ``context.state`` if the context holds none (after a restart)."""
    if STATE_KEY in context.state:
        return
    path = history_path(context, partition_id)
    if path.is_file():
        saved, history = _read(path)
        if saved != mechanism:
            raise ValueError(
                f"the DP accountant history {path} was kept by the {saved!r} accountant, but `privacy.accountant` = "
                f"{mechanism!r}; ε cannot be composed across accountants"
            )
        save_history(context.state, history, mechanism=mechanism)


def check_history(context: Context, *, expected: float, mechanism: str, delta: float, path: Path) -> float:
    """ε of the history in ``context.state``; :class:`HistoryMissing` if below ``expected`` (what the server saw)."""
    spent = epsilon_of(load_history(context.state, mechanism=mechanism), mechanism=mechanism, delta=delta)
    if expected > 0 and spent < expected * (1 - RELATIVE_TOLERANCE):
        found = "no history" if spent == 0 else f"a history worth only ε = {spent:.6g}"
        raise HistoryMissing(
            f"this node reported ε = {expected:.6g} (δ = {delta:.3g}) to the server in an earlier round, but holds "
            f"{found} (Context.state and {path}); training on would restart its privacy accounting. It refuses to "
            f"train: restore {path} (node-config `{STATE_DIR}`) from the node's disk or a backup, or start a new run"
        )
    return spent


def persist_history(context: Context, *, partition_id: int, mechanism: str) -> Path:
    """Write the history in ``context.state`` to disk (atomically); returns the path."""
    path = history_path(context, partition_id)
    history = load_history(context.state, mechanism=mechanism)
    data = {
        "format": FORMAT,
        "mechanism": mechanism,
        "noise-multiplier": [s for s, _, _ in history],
        "sample-rate": [q for _, q, _ in history],
        "steps": [n for _, _, n in history],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
