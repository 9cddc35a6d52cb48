"""Reading a checkpoint trusts nothing in the file (docs/operations.md §3): every damaged or edited
field fails at load with a CheckpointError naming it, never a TypeError or IndexError later."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from server.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, check_rounds_left
from server.metering import LedgerRow


def _valid(folder: Path) -> Path:
    Checkpoint(
        server_round=2, config={"seed": 1, "train.lr": 0.01, "strategy.name": "fedit"},
        global_arrays={"a": np.ones((2, 3), np.float32)}, frozen={"f": np.zeros((3, 2), np.float32)},
        strategy_arrays={"log/x": np.ones(2)}, strategy_meta={"version": 2}, rng_state=random.Random(4).getstate(),
        ledger=[LedgerRow(1, 2**64 - 1, "up", "train", 10), LedgerRow(2, 7, "down", "setup", 9)],
        rows=[{"round": 0, "clients": 0}, {"round": 1, "clients": 3}, {"round": 2, "clients": 3, "fed_x": [1.0, 2.0]}],
        broadcast={"lexicon": ["a"]},
        epsilon_ledger={"7": {"reported": 1.5, "rounds": 2, "unreported": 1, "partition": 0}},
    ).save(folder)
    return folder / CHECKPOINT_NAME


def _tamper(folder: Path, *, metadata: dict[str, str | None] | None = None, tensors: dict[str, np.ndarray | None] | None = None) -> None:
    """Rewrite the checkpoint with some metadata entries / tensors replaced (None: removed)."""
    path = _valid(folder)
    with safe_open(str(path), framework="numpy") as handle:
        meta = dict(handle.metadata())
    arrays = load_file(str(path))
    for key, value in (metadata or {}).items():
        meta.pop(key, None) if value is None else meta.__setitem__(key, value)
    for key, value in (tensors or {}).items():
        arrays.pop(key, None) if value is None else arrays.__setitem__(key, value)
    save_file(arrays, str(path), metadata=meta)


def test_a_valid_checkpoint_round_trips(tmp_path: Path) -> None:
    _valid(tmp_path)
    ckpt = Checkpoint.load(tmp_path)
    assert ckpt.server_round == 2 and ckpt.rows[2]["fed_x"] == [1.0, 2.0] and ckpt.broadcast == {"lexicon": ["a"]}
    assert ckpt.ledger[0].node == 2**64 - 1 and ckpt.rng_state == random.Random(4).getstate()
    assert set(ckpt.global_arrays) == {"a"} and set(ckpt.frozen) == {"f"} and set(ckpt.strategy_arrays) == {"log/x"}
    assert ckpt.epsilon_ledger == {"7": {"reported": 1.5, "rounds": 2, "unreported": 1, "partition": 0}}


DEEP = "[" * 100_000 + "]" * 100_000

METADATA_CASES = [
    ("round", None, "`round` is missing"),
    ("round", "two", "`round`: expected a whole number, got 'two'"),
    ("round", "-1", "`round`: expected a whole number"),
    ("round", "0", "`round`: 0 is outside [1, 100000]"),
    ("round", "1e9", "`round`: expected a whole number"),
    ("config", "not json", "`config`: Expecting value"),
    ("config", "[1, 2]", "`config`: expected a JSON object, got list"),
    ("config", '{"seed": [1]}', "`config`: values must be bool, int, float or str; not at ['seed']"),
    ("config", DEEP, "`config`:"),
    ("strategy", "[]", "`strategy`: expected a JSON object, got list"),
    ("strategy", None, "`strategy` is missing"),
    ("rng", "[3, [1, 2], null]", "`rng`: state vector is the wrong size"),
    ("rng", '[3, "abc", null]', "`rng`: expected [version, [state ...], gauss]"),
    ("rng", "[99, [], null]", "`rng`:"),
    ("rows", '{"round": 0}', "`rows`: expected a JSON list of rows, got dict"),
    ("rows", "[1]", "`rows`: row 0 must be a JSON object, got int"),
    ("rows", '[{"round": "0"}]', "`rows`: row 0 has round '0'"),
    ("rows", '[{"round": 0}, {"round": 0}]', "`rows`: row 1 has round 0; rounds must increase and stay within 0..2"),
    ("rows", '[{"round": 5}]', "`rows`: row 0 has round 5"),
    ("rows", '[{"round": 1, "dropped": -1}]', "`rows`: row 0: dropped must be non-negative whole numbers"),
    ("rows", '[{"round": 1, "clients": 2.5}]', "`rows`: row 0: clients must be non-negative"),
    ("broadcast", "[1]", "`broadcast`: expected a JSON object, got list"),
    ("broadcast", None, "`broadcast` is missing"),
    ("epsilon-ledger", "[1]", "`epsilon-ledger`: expected a JSON object, got list"),
    ("epsilon-ledger", '{"7": {"reported": NaN, "rounds": 1, "unreported": 0, "partition": null}}',
     "`epsilon-ledger`: ε ledger entry for node '7' is malformed"),
    ("epsilon-ledger", '{"7": {"reported": 1.0, "rounds": 1, "unreported": 2, "partition": null}}',
     "`epsilon-ledger`: ε ledger entry for node '7' is malformed"),
    ("epsilon-ledger", '{"x": {"reported": 1.0, "rounds": 1, "unreported": 0, "partition": null}}',
     "`epsilon-ledger`:"),
]


@pytest.mark.parametrize(("key", "value", "expected"), METADATA_CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(METADATA_CASES)])
def test_a_bad_metadata_field_fails_at_load_naming_it(tmp_path: Path, key: str, value: str | None, expected: str) -> None:
    _tamper(tmp_path, metadata={key: value})
    with pytest.raises(CheckpointError) as err:
        Checkpoint.load(tmp_path)
    assert "is not a valid Corolla checkpoint" in str(err.value) and expected in str(err.value)


TENSOR_CASES = [
    ("ledger", None, "`ledger` is missing"),
    ("ledger", np.zeros((2, 5), np.float64), "`ledger`: expected a (rows, 5) uint64 table, got float64"),
    ("ledger", np.zeros((2, 4), np.uint64), "`ledger`: expected a (rows, 5) uint64 table, got uint64 (2, 4)"),
    ("ledger", np.array([[1, 7, 9, 0, 10]], np.uint64), "`ledger`: entry (round 1, direction 9, phase 0) is out of range"),
    ("ledger", np.array([[1, 7, 0, 99, 10]], np.uint64), "phase 99) is out of range"),
    ("ledger", np.array([[3, 7, 0, 0, 10]], np.uint64), "entry (round 3,"),
    ("weird/x", np.ones(2, np.float32), "unexpected tensor `weird/x`"),
    ("global/", np.ones(2, np.float32), "unexpected tensor `global/`"),
    ("global/a", np.array([[1, np.nan, 0]] * 2, np.float32), "`global/a` holds NaN or inf"),
    ("frozen/f", np.full((3, 2), np.inf, np.float32), "`frozen/f` holds NaN or inf"),
    ("global/a", None, "no `global/*` arrays"),
]


@pytest.mark.parametrize(("key", "value", "expected"), TENSOR_CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(TENSOR_CASES)])
def test_a_bad_tensor_fails_at_load_naming_it(tmp_path: Path, key: str, value: np.ndarray | None, expected: str) -> None:
    _tamper(tmp_path, tensors={key: value})
    with pytest.raises(CheckpointError) as err:
        Checkpoint.load(tmp_path)
    assert expected in str(err.value)


def test_every_problem_is_named_together(tmp_path: Path) -> None:
    _tamper(tmp_path, metadata={"round": "x", "rows": "{}", "broadcast": "1"}, tensors={"ledger": None})
    with pytest.raises(CheckpointError) as err:
        Checkpoint.load(tmp_path)
    for field in ("`round`", "`rows`", "`broadcast`", "`ledger`"):
        assert field in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "huge-header"])
def test_a_file_that_is_not_a_safetensors_checkpoint_fails_clearly(tmp_path: Path, damage: str) -> None:
    path = _valid(tmp_path)
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x80\x04pickle? no", "truncated": data[: len(data) // 2],
                      "huge-header": (2**62).to_bytes(8, "little") + data[8:]}[damage])
    with pytest.raises(CheckpointError, match="cannot be read .* it is not a Corolla checkpoint or is damaged"):
        Checkpoint.load(tmp_path)


def test_num_server_rounds_may_grow_never_shrink() -> None:
    check_rounds_left(3, 4)
    for rounds in (3, 2):
        with pytest.raises(CheckpointError, match=f"`num-server-rounds` = {rounds} leaves nothing to run: the checkpoint "
                           "is after round 3"):
            check_rounds_left(3, rounds)


def test_the_checkpoint_holds_no_pickle(tmp_path: Path) -> None:
    path = _valid(tmp_path)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])  # safetensors: a JSON header, then raw tensor bytes
    assert set(header["__metadata__"]) == {"round", "config", "strategy", "rng", "rows", "broadcast", "epsilon-ledger"}
    assert all(isinstance(v, str) for v in header["__metadata__"].values())
