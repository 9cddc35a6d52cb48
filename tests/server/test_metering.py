"""Byte metering: the ledger equals the record sizes of the messages actually exchanged."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from flwr.common.serde import message_to_proto

from contract import ARRAYS, message_bytes
from tests.strategies.fake_grid import FakeGrid


def ledger(path: Path) -> dict[tuple[int, int, str], int]:
    rows: dict[tuple[int, int, str], int] = defaultdict(int)
    with (path / "ledger.csv").open() as handle:
        for row in csv.DictReader(handle):
            rows[(int(row["round"]), int(row["node"]), row["direction"])] += int(row["bytes"])
    return dict(rows)


def test_ledger_equals_the_sizes_of_the_messages_sent_and_received(tiny_run: tuple[FakeGrid, Path]) -> None:
    grid, path = tiny_run
    expected: dict[tuple[int, int, str], int] = defaultdict(int)
    for instruction, reply in grid.log:
        rnd = int(instruction.content["config"]["server-round"])
        node = instruction.metadata.dst_node_id
        expected[(rnd, node, "down")] += message_bytes(instruction)
        expected[(rnd, node, "up")] += message_bytes(reply)
    assert ledger(path) == dict(expected)
    assert len(grid.log) == 2 * 3  # 2 rounds x 3 nodes, training only (fraction-evaluate = 0)


def test_metered_bytes_are_tensor_bytes_plus_a_small_measured_overhead(tiny_run: tuple[FakeGrid, Path]) -> None:
    grid, _ = tiny_run
    for instruction, reply in grid.log:
        for msg in (instruction, reply):
            raw = sum(a.numpy().nbytes for a in msg.content[ARRAYS].values())
            metered = message_bytes(msg)
            overhead = metered - raw
            # npy header (128 B) + key per tensor, plus the config/metric records
            assert 0 < overhead <= 200 * len(msg.content[ARRAYS]) + 512, overhead
            # and the protobuf message Flower serialises is the metered payload plus a small envelope
            wire = message_to_proto(msg).ByteSize()
            assert 0 <= wire - metered < 2048, (wire, metered)


def test_down_bytes_are_the_same_for_every_node_of_a_round(tiny_run: tuple[FakeGrid, Path]) -> None:
    _, path = tiny_run
    rows = ledger(path)
    for rnd in (1, 2):
        downs = {v for (r, _, d), v in rows.items() if r == rnd and d == "down"}
        assert len(downs) == 1
        ups = [v for (r, _, d), v in rows.items() if r == rnd and d == "up"]
        assert len(ups) == 3 and np.ptp(ups) < 64  # same tensors; metrics differ by a few bytes at most
