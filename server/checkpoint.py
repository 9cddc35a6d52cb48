"""Round checkpoints: everything a killed run needs to continue, written atomically after each round.

``<run folder>/checkpoint.safetensors`` holds, after round ``t``:

- ``global/<key>``   the global adapter payload the next round starts from,
- ``frozen/<key>``   the frozen adapter factors (FFA's A, Fed-SB's B and A): a resumed run installs
  these instead of re-initialising (Fed-SB's federated init would otherwise ask clients again),
- ``strategy/<key>`` the strategy's own arrays (FedEx-LoRA / FLoRA: the versioned residual log),
- ``ledger``         every metered message so far, ``(rows, 5)`` uint64 (round, node, direction, phase,
  bytes; Flower's node ids are random unsigned 64-bit integers),

and, in the safetensors metadata (plain strings, JSON; never pickle), the round, the config, the
strategy's metadata, Python's ``random`` state (Flower samples nodes with it), the plugin broadcast
and the ``rounds.jsonl`` rows. The file is written to a temporary name, fsynced, then renamed over
the previous checkpoint (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the
old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from contract.secagg import PHASES as SECAGG_PHASES
from contract.secagg import STAGES as SECAGG_STAGES
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
        """Read ``folder / checkpoint.safetensors``.

        Raises
        ------
        CheckpointError
            No checkpoint in ``folder``, or one that cannot be read.
        """
        path = Path(folder) / CHECKPOINT_NAME
        if not path.is_file():
            raise CheckpointError(
                f"`resume-from` = {str(folder)!r} has no {CHECKPOINT_NAME}: point it at the run folder of a run "
                "that completed at least one round (runs write a checkpoint after every round)"
            )
        try:
            from safetensors import safe_open  # noqa: PLC0415 - metadata reader

            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            version, internal, gauss = json.loads(metadata["rng"])
            ledger = [
                LedgerRow(int(r), int(n), _DIRECTIONS[int(d)], _PHASES[int(p)], int(b))
                for r, n, d, p, b in tensors.pop("ledger").tolist()
            ]
            groups: dict[str, dict[str, np.ndarray]] = {"global": {}, "frozen": {}, "strategy": {}}
            for key, value in tensors.items():
                prefix, _, name = key.partition("/")
                groups[prefix][name] = value
            return cls(
                server_round=int(metadata["round"]),
                config=json.loads(metadata["config"]),
                global_arrays=groups["global"],
                frozen=groups["frozen"],
                strategy_arrays=groups["strategy"],
                strategy_meta=json.loads(metadata["strategy"]),
                rng_state=(version, tuple(internal), gauss),
                ledger=ledger,
                rows=json.loads(metadata["rows"]),
                broadcast=json.loads(metadata["broadcast"]),
            )
        except (KeyError, ValueError, OSError) as exc:
            raise CheckpointError(f"{path} cannot be read ({exc}); it is not a Corolla checkpoint or is damaged") from exc


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


def rng_state() -> Any:
    """Python's global ``random`` state (Flower's node sampling draws from it)."""
    return random.getstate()
