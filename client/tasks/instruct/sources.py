"""Where instruction data comes from: local files and folders, HF datasets, reasoning-gym.

:func:`load_source` reads ``instruct.source`` into :class:`SourcePart` s, one per file (or per HF
split), each with its own name (the per-source score breakdown and the default partition label use
it) and, when the source says so, the split it belongs to:

* a local ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file: one part, named after the file
  stem; a file whose stem is ``test`` (or ends in ``-test`` / ``_test``) is the test split, one
  named ``train`` (or ending so) the training pool, anything else unassigned;
* a local folder: every such file in it (sorted, not recursive), split by the same names; parts
  that share a stem apart from their split suffix share a name;
* ``reasoning-gym:<name>[,<name>...]``: :mod:`client.tasks.instruct.reasoning`;
* anything else: an HF dataset id or path, through ``datasets.load_dataset`` (its ``train`` and
  ``test`` splits; other splits are ignored).

Row numbers in errors are 1-based lines for JSONL and CSV (the header is line 1) and 1-based
record indices otherwise.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from client.tasks.instruct.reasoning import REASONING_PREFIX, ReasoningGym

FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet")
SPLIT_NAMES = ("train", "test")


@dataclass(frozen=True)
class SourcePart:
    """Records of one file or split: ``name`` (source name), ``origin`` (what errors quote),
    ``split`` (``"train"``, ``"test"`` or ``None`` when the source does not say), ``records`` with
    their row numbers, and for reasoning-gym the fixed format it comes in."""

    name: str
    origin: str
    split: str | None
    records: list[tuple[int, dict[str, Any]]]
    fixed_format: str | None = None


def _split_of(stem: str) -> tuple[str, str | None]:
    """``"alpaca-test"`` -> ``("alpaca", "test")``; ``"train"`` -> ``("train", "train")``."""
    low = stem.lower()
    for split in SPLIT_NAMES:
        if low == split:
            return stem, split
        for sep in ("-", "_", "."):
            if low.endswith(sep + split):
                return stem[: -len(split) - 1], split
    return stem, None


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, row {lineno}: not valid JSON ({exc.msg})") from exc
            records.append((lineno, obj))
    return records


def _read_json(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json
            return _read_jsonl(path)
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: a .json source must hold a list of records (or {{\"data\": [...]}})")
    return list(enumerate(data, 1))


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return [(lineno, dict(rec)) for lineno, rec in enumerate(reader, 2)]


def _read_parquet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # a dependency of `datasets`, untyped

    return list(enumerate(pq.read_table(path).to_pylist(), 1))


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def read_file(path: Path) -> SourcePart:
    """One local file as a :class:`SourcePart`."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; `instruct.source` files are {', '.join(FILE_TYPES)}")
    records = reader(path)
    if not records:
        raise ValueError(f"{path}: no rows")
    name, split = _split_of(path.stem)
    return SourcePart(name=name, origin=str(path), split=split, records=records)


def read_folder(path: Path) -> list[SourcePart]:
    """Every supported file directly in ``path``, sorted by name; a file named just ``train`` or
    ``test`` belongs to the source named after the folder."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FILE_TYPES)
    if not files:
        raise ValueError(f"{path}: the folder holds no {', '.join(FILE_TYPES)} file for `instruct.source`")
    parts = [read_file(p) for p in files]
    return [replace(p, name=path.name) if p.name.lower() in SPLIT_NAMES else p for p in parts]


def read_hf_dataset(source: str, *, max_rows: int) -> list[SourcePart]:
    """The ``train`` and ``test`` splits of the HF dataset ``source`` (an id or a local path)."""
    import datasets

    try:
        loaded = datasets.load_dataset(source)
    except Exception as exc:  # noqa: BLE001 - load_dataset raises many kinds; say what was tried
        raise ValueError(
            f"`instruct.source` = {source!r} is not a local file or folder, and datasets.load_dataset "
            f"could not load it as an HF dataset ({type(exc).__name__}: {exc}); give a .jsonl/.json/.csv/"
            "/.parquet path, a folder, an HF dataset id (online), or `reasoning-gym:<name>`"
        ) from exc
    splits = [s for s in SPLIT_NAMES if s in loaded]
    if "train" not in splits:
        raise ValueError(f"HF dataset {source!r} has no `train` split (it has {', '.join(loaded)})")
    parts = []
    for split in splits:
        table = loaded[split]
        if max_rows:
            table = table.select(range(min(max_rows, table.num_rows)))
        parts.append(SourcePart(name=source, origin=f"{source} [{split}]", split=split,
                                records=list(enumerate(table.to_list(), 1))))
    return parts


def load_source(source: str, *, seed: int, num_examples: int, max_rows: int) -> list[SourcePart]:
    """``instruct.source`` as source parts (module docstring).

    Raises
    ------
    ValueError
        On an unreadable or empty file, an unknown file type, an HF id that does not load.
    ImportError
        For ``reasoning-gym:`` without the ``reasoning`` extra (the message names the install).
    """
    if source.startswith(REASONING_PREFIX):
        return ReasoningGym.parse(source).parts(seed=seed, num_examples=num_examples)
    path = Path(source).expanduser()
    if path.is_dir():
        parts = read_folder(path)
    elif path.is_file():
        parts = [read_file(path)]
    elif path.suffix.lower() in FILE_TYPES:
        raise ValueError(f"`instruct.source` = {source!r}: no such file")
    else:
        return read_hf_dataset(source, max_rows=max_rows)
    if max_rows:
        parts = [replace(p, records=p.records[:max_rows]) for p in parts]
    return parts
