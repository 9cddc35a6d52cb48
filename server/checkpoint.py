"""Round checkpoints: everything a killed run needs to continue, written atomically after each round.

``<run folder>/checkpoint.safetensors`` holds, after round ``t``:

- ``global/<key>``   the global adapter payload the next round starts from,
- ``frozen/<key>``   the frozen adapter factors (FFA's A, Fed-SB's B and A): a resumed run installs
  these instead of re-initialising (Fed-SB's federated init would otherwise ask clients again),
- ``strategy/<key>`` the strategy's own arrays (FedEx-LoRA / FLoRA: the versioned residual log),
- ``ledger``         every metered message so far, ``(rows, 5)`` uint64 (round, node, direction, phase,
  bytes; Flower's node ids are random unsigned 64-bit integers),

and, in the safetensors metadata (plain strings, JSON; never pickle), the round, the config, the
strategy's metadata, Python's ``random`` state (Flower samples nodes with it), the plugin broadcast,
the ``rounds.jsonl`` rows and, in a DP run, the per-node ε ledger (``server.epsilon_ledger``). The file is written to a temporary name, fsynced, then renamed over
the previous checkpoint (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the
old or the new checkpoint, never half of one.

Reading trusts nothing in the file (``docs/operations.md §3``): every field is checked for presence,
type and consistency (:func:`read_fields`), and ``server.run_state`` checks that the arrays fit the
model before anything runs, so a damaged or edited checkpoint fails at start with every problem named.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from contract.config.run_config import MAX_ROUNDS
from contract.secagg import PHASES as SECAGG_PHASES
from contract.secagg import STAGES as SECAGG_STAGES
from server.epsilon_ledger import EpsilonLedger
from server.metering import LedgerRow

CHECKPOINT_NAME = "checkpoint.safetensors"
_DIRECTIONS = ("down", "up")
_PHASES = ("train", "evaluate", "setup", *(SECAGG_PHASES[stage] for stage in SECAGG_STAGES))  # append only: indexes are stored


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why and what to do."""


@dataclass
class Checkpoint:
    """One round's resumable state (module docstring)."""

    server_round: int
    config: dict[str, Any]
    global_arrays: dict[str, np.ndarray]
    frozen: dict[str, np.ndarray]
    strategy_arrays: dict[str, np.ndarray]
    strategy_meta: dict[str, Any]
    rng_state: Any
    ledger: list[LedgerRow]
    rows: list[dict[str, Any]]
    broadcast: dict[str, Any] | None = None
    epsilon_ledger: dict[str, Any] | None = None  # EpsilonLedger.state() of a DP run

    def save(self, folder: Path) -> Path:
        """Write atomically to ``folder / checkpoint.safetensors``; return the path."""
        tensors: dict[str, np.ndarray] = {}
        for prefix, arrays in (("global", self.global_arrays), ("frozen", self.frozen), ("strategy", self.strategy_arrays)):
            tensors.update({f"{prefix}/{k}": np.ascontiguousarray(v) for k, v in arrays.items()})
        tensors["ledger"] = np.array(
            [(r.round, r.node, _DIRECTIONS.index(r.direction), _PHASES.index(r.phase), r.bytes) for r in self.ledger],
            dtype=np.uint64,
        ).reshape(-1, 5)
        version, internal, gauss = self.rng_state
        metadata = {
            "round": str(self.server_round),
            "config": json.dumps(self.config, sort_keys=True),
            "strategy": json.dumps(self.strategy_meta, sort_keys=True),
            "rng": json.dumps([version, list(internal), gauss]),
            "rows": json.dumps(self.rows),
            "broadcast": json.dumps(self.broadcast),
            "epsilon-ledger": json.dumps(self.epsilon_ledger),
        }
        path = folder / CHECKPOINT_NAME
        tmp = folder / f".{CHECKPOINT_NAME}.tmp"
        save_file(tensors, str(tmp), metadata=metadata)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: Path) -> Checkpoint:
        """Read ``folder / checkpoint.safetensors``, every field validated (:func:`read_fields`).

        Raises
        ------
        CheckpointError
            No checkpoint in ``folder``, a file safetensors cannot read, or any field that is missing,
            of the wrong type or inconsistent (all of them, each named).
        """
        path = Path(folder) / CHECKPOINT_NAME
        if not path.is_file():
            raise CheckpointError(
                f"`resume-from` = {str(folder)!r} has no {CHECKPOINT_NAME}: point it at the run folder of a run "
                "that completed at least one round (runs write a checkpoint after every round)"
            )
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = dict(handle.metadata() or {})
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors' own SafetensorError, OSError, ...: not a checkpoint
            raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it is not a Corolla checkpoint "
                                  "or is damaged") from exc
        return cls(**read_fields(metadata, tensors, path=path))


_PREFIXES = ("global", "frozen", "strategy")
_COUNTS = ("clients", "dropped", "timed_out", "bytes_down", "bytes_up")  # row fields that are non-negative integers
_SCALARS = (bool, int, float, str)


def read_fields(metadata: Mapping[str, str], tensors: dict[str, np.ndarray], *, path: Path) -> dict[str, Any]:
    """The :class:`Checkpoint` fields from a file's metadata and tensors, each checked for type and consistency.

    A tampered or truncated checkpoint fails here, naming every bad field, instead of raising a
    ``TypeError`` or ``IndexError`` somewhere in the resumed run.

    Raises
    ------
    CheckpointError
        Listing every problem.
    """
    problems: list[str] = []

    def check(name: str, parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except KeyError:
            problems.append(f"`{name}` is missing")
        except (ValueError, TypeError, OverflowError, IndexError, RecursionError) as exc:
            problems.append(f"`{name}`: {exc}")
        return None

    server_round = check("round", lambda: _bounded_int(metadata["round"], 1, MAX_ROUNDS))
    fields = {
        "server_round": server_round,
        "config": check("config", lambda: _scalar_dict(_json(metadata["config"]))),
        "strategy_meta": check("strategy", lambda: _dict(_json(metadata["strategy"]))),
        "rng_state": check("rng", lambda: _rng(_json(metadata["rng"]))),
        "rows": check("rows", lambda: _rows(_json(metadata["rows"]), server_round or MAX_ROUNDS)),
        "broadcast": check("broadcast", lambda: _optional_dict(_json(metadata["broadcast"]))),
        "epsilon_ledger": check("epsilon-ledger", lambda: _epsilon_ledger(metadata.get("epsilon-ledger", "null"))),
        "ledger": check("ledger", lambda: _ledger(tensors.pop("ledger"), server_round or MAX_ROUNDS)),
    }
    groups: dict[str, dict[str, np.ndarray]] = {prefix: {} for prefix in _PREFIXES}
    for key, value in tensors.items():
        prefix, _, name = key.partition("/")
        if prefix not in groups or not name:
            problems.append(f"unexpected tensor `{key}` (a checkpoint holds ledger, global/*, frozen/*, strategy/*)")
        elif prefix != "strategy" and np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            problems.append(f"`{key}` holds NaN or inf")
        else:
            groups[prefix][name] = value
    if not groups["global"] and not problems:
        problems.append("no `global/*` arrays: the global adapter is missing")
    if problems:
        raise CheckpointError(
            f"{path} is not a valid Corolla checkpoint: " + "; ".join(problems)
            + ". It was damaged or edited; resume from an intact run folder, or start a new run"
        )
    return {**fields, "global_arrays": groups["global"], "frozen": groups["frozen"], "strategy_arrays": groups["strategy"]}


def _json(text: str) -> Any:
    if not isinstance(text, str):
        raise TypeError(f"expected JSON text, got {type(text).__name__}")
    return json.loads(text)  # json.JSONDecodeError is a ValueError


def _bounded_int(text: str, low: int, high: int) -> int:
    if not (isinstance(text, str) and text.isdigit()):
        raise ValueError(f"expected a whole number, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside [{low}, {high}]")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _optional_dict(value: Any) -> dict[str, Any] | None:
    return None if value is None else _dict(value)


def _epsilon_ledger(text: str) -> dict[str, Any] | None:
    """The per-node ε ledger (absent in checkpoints of runs without DP), each entry checked."""
    state = _optional_dict(_json(text))
    if state is not None:
        EpsilonLedger.nodes_from_state(state)  # ValueError naming the bad node
    return state


def _scalar_dict(value: Any) -> dict[str, Any]:
    bad = [key for key, item in _dict(value).items() if not isinstance(item, _SCALARS)]
    if bad:
        raise TypeError(f"values must be bool, int, float or str; not at {bad[:5]}")
    return value


def _rng(value: Any) -> Any:
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[1], list)):
        raise TypeError("expected [version, [state ...], gauss]")
    version, internal, gauss = value
    state = (version, tuple(internal), gauss)
    random.Random().setstate(state)  # Python's own check of the Mersenne Twister state (TypeError / ValueError)
    return state


def _rows(value: Any, server_round: int) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON list of rows, got {type(value).__name__}")
    last = -1
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise TypeError(f"row {index} must be a JSON object, got {type(row).__name__}")
        rnd = row.get("round")
        if type(rnd) is not int or not last < rnd <= server_round:
            raise ValueError(f"row {index} has round {rnd!r}; rounds must increase and stay within 0..{server_round}")
        bad = [k for k in _COUNTS if k in row and (type(row[k]) is not int or row[k] < 0)]
        if bad:
            raise ValueError(f"row {index}: {', '.join(bad)} must be non-negative whole numbers")
        last = rnd
    return value


def _ledger(table: np.ndarray, server_round: int) -> list[LedgerRow]:
    if table.dtype != np.uint64 or table.ndim != 2 or table.shape[1] != 5:
        raise ValueError(f"expected a (rows, 5) uint64 table, got {table.dtype} {table.shape}")
    rows = table.tolist()
    for r, _, d, p, _ in rows:
        if r > server_round or d >= len(_DIRECTIONS) or p >= len(_PHASES):
            raise ValueError(f"entry (round {r}, direction {d}, phase {p}) is out of range")
    return [LedgerRow(int(r), int(n), _DIRECTIONS[int(d)], _PHASES[int(p)], int(b)) for r, n, d, p, b in rows]


# Keys that may differ between the killed run and its resumption; anything else would change the run.
# (`run-name` and `output-dir` do not matter: a resumed run writes into the `resume-from` folder.)
RESUMABLE_CHANGES = frozenset({"resume-from", "num-server-rounds", "run-name", "output-dir", "round-timeout"})


def check_compatible(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume with a config that would not continue the same run.

    Raises
    ------
    CheckpointError
        Listing every key whose value differs, with both values.
    """
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    diffs = [f"`{k}`: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError(
            "`resume-from` continues a run with the same config (only `num-server-rounds` may grow); these keys "
            "differ: " + "; ".join(diffs) + ". Drop the overrides or start a new run."
        )
    if int(current["num-server-rounds"]) < 1:
        raise CheckpointError("`num-server-rounds` must be >= 1")


def check_rounds_left(checkpoint_round: int, num_server_rounds: int) -> None:
    """Refuse a ``num-server-rounds`` that leaves no round to run after the checkpoint's.

    Raises
    ------
    CheckpointError
        ``num-server-rounds`` is at or below the round the checkpoint was written after.
    """
    if num_server_rounds <= checkpoint_round:
        raise CheckpointError(
            f"`num-server-rounds` = {num_server_rounds} leaves nothing to run: the checkpoint is after round "
            f"{checkpoint_round}, so the run already did {checkpoint_round} rounds. Set `num-server-rounds` above "
            f"{checkpoint_round} to continue it (it may grow, never shrink), or start a new run"
        )


def rng_state() -> Any:
    """Python's global ``random`` state (Flower's node sampling draws from it)."""
    return random.getstate()
