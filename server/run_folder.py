"""The run folder: everything a run leaves behind, and all that reports are rendered from.

``<output-dir>/<run-name>/``
    ``config.json``   the resolved run config (every key, defaults filled in)
    ``rounds.jsonl``  one JSON object per round (round 0 is the initial evaluation)
    ``ledger.csv``    ``round,node,direction,phase,bytes``: every metered message
    ``adapter/``      the final adapter in PEFT format (``PeftModel.from_pretrained`` loads it)
    ``merged/``       merged weights, for strategies that change the frozen base (FedEx-LoRA, FLoRA)
                      and kinds whose adapter needs Corolla's own layers to load (ABBA)
    ``summary.json``  totals and the final metrics, written when the run completes
    ``checkpoint.safetensors``  the state after the last completed round (``resume-from`` reads it)
    ``plugins/``      a task plugin's per-round detail (``round-<N>.json``), when it writes any

The output directory is resolved to an absolute path before use: a ServerApp's working directory
is the SuperLink's, not the app's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import RunConfig


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run's artifacts."""

    path: Path

    @classmethod
    def create(cls, config: RunConfig) -> RunFolder:
        """Make a fresh folder under ``output-dir`` and write ``config.json``."""
        root = Path(config.output_dir).expanduser().resolve()
        model = Path(config.model.name.rstrip("/")).name or "model"  # a model folder: its own name, not its path
        # `run-name` is validated as one plain folder name (contract.config.run_config); the default is made one
        name = config.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{config.strategy.name}-{model}"[:100]
        name = name.replace("/", "_").replace("\\", "_")
        path = root / name
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{name}-{suffix}"
        path.mkdir(parents=True)
        folder = cls(path)
        folder.config_path.write_text(json.dumps(config.to_flat(), indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def reopen(cls, path: Path, config: RunConfig, rows: list[dict[str, Any]]) -> RunFolder:
        """Continue a killed run in its own folder: ``rounds.jsonl`` is cut back to the checkpoint's
        rows (a round recorded after the last checkpoint is run again), ``config.json`` rewritten."""
        folder = cls(Path(path).expanduser().resolve())
        folder.config_path.write_text(json.dumps(config.to_flat(), indent=2, sort_keys=True) + "\n")
        tmp = folder.rounds_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
        tmp.replace(folder.rounds_path)
        return folder

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def rounds_path(self) -> Path:
        return self.path / "rounds.jsonl"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.csv"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.path / "merged"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def append_round(self, row: dict[str, Any]) -> None:
        """Append one round's metrics as a JSON line (flushed at once, so a crash keeps it)."""
        with self.rounds_path.open("a") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json``."""
        self.summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``rounds.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
