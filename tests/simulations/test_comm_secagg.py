"""``corolla comm``'s SecAgg+ block: the analytic bytes per client per round equal, stage by stage and
direction by direction, what the ledger meters in a real in-process SecAgg round (real handlers and
cryptography over the in-process grid; ``docs/communication.md §8``)."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from contract import secagg as wire
from contract.frozen import FROZEN_CONFIRMED
from contract.secagg import SecAggConfig
from simulations import cli
from simulations.comm import CommError, comm_table, report, secagg_costs
from simulations.comm_secagg import fernet_bytes, key_sizes, npy_bytes, secagg_cost, share_bytes
from tests.server.secagg.federation import Federation

STAGE_PHASES = {wire.STAGE_NAMES[s]: wire.PHASES[s] for s in wire.STAGES}


def metered(fed: Federation) -> dict[tuple[str, str, int], int]:
    """(phase, direction, node) -> bytes of one round."""
    out: dict[tuple[str, str, int], int] = defaultdict(int)
    for row in fed.ledger.rows:
        out[(row.phase, row.direction, row.node)] += row.bytes
    return out


@pytest.mark.parametrize(
    ("k", "shapes", "config"),
    [
        (5, {"r": (4, 4), "head": (3,)}, SecAggConfig(enabled=True)),
        (7, {"a": (8, 16), "b": (16, 8), "c": (5,)}, SecAggConfig(enabled=True, num_shares=3, threshold=2)),
        (4, {"r": (32, 32)}, SecAggConfig(enabled=True, quantization_bits=10, max_weight=3)),
    ],
)
def test_analytic_bytes_equal_the_metered_bytes_of_every_client(
    k: int, shapes: dict[str, tuple[int, ...]], config: SecAggConfig
) -> None:
    fed = Federation(k=k, shapes=shapes)
    outcome = fed.run(config)
    assert len(outcome.survivors) == k  # type: ignore[union-attr]
    upload = sum(int(np.prod(s)) for s in shapes.values())
    # the stub's train reply carries one of the plaintext protocol metrics (contract.secagg.PUBLIC_METRICS)
    cost = secagg_cost(upload, k, config, public_metrics=(FROZEN_CONFIRMED,))
    got = metered(fed)
    for node in fed.grid.node_ids:
        for stage, phase in STAGE_PHASES.items():
            assert got[(phase, "down", node)] == cost.down[stage], (stage, node)
            assert got[(phase, "up", node)] == cost.up[stage], (stage, node)
    secagg_total = sum(v for (phase, _, _), v in got.items() if phase in STAGE_PHASES.values())
    assert secagg_total == k * cost.total


def test_ten_clients_reproduce_the_measured_fedsb_round() -> None:
    # Fed-SB on the default task (minilm-l6, r = 32 on 12 modules + the 384 x 5 head): measured per client
    # per round in an in-process run of 10 clients (README, secure aggregation)
    cost = secagg_cost(12 * 32 * 32 + 384 * 5 + 5, 10)
    assert cost.modulus_bits == 39  # 10 x 10,000 x (2^22 - 1) < 2^39
    assert {s: cost.stage(s) for s in cost.down} == {"set-up": 574, "share-keys": 10_064, "collect": 76_945, "unmask": 726}


def test_crypto_sizes_come_from_flowers_primitives() -> None:
    from cryptography.fernet import Fernet
    from flwr.common.secure_aggregation.crypto.shamir import create_shares

    public, private = key_sizes()
    assert public == 215  # PEM SubjectPublicKeyInfo of a SECP384R1 key
    for size in (0, 15, 16, 32, private):
        assert all(len(s) == share_bytes(size) for s in create_shares(b"x" * size, 2, 3))
        assert len(Fernet(Fernet.generate_key()).encrypt(b"y" * size)) == fernet_bytes(size)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1001, 5), dtype=np.uint8), allow_pickle=False)
    assert npy_bytes((1001, 5)) == len(buffer.getvalue())


def test_the_ring_grows_with_the_clients_and_overflow_is_refused() -> None:
    assert secagg_cost(100, 10).modulus_bits == 39 and secagg_cost(100, 100).modulus_bits == 42
    small = secagg_cost(100, 10, SecAggConfig(enabled=True, quantization_bits=8, max_weight=1))
    assert small.modulus_bits == 12 and small.up["collect"] < secagg_cost(100, 10).up["collect"]
    with pytest.raises(ValueError, match="secagg.quantization-bits"):
        secagg_cost(100, 2**20, SecAggConfig(enabled=True, quantization_bits=30, max_weight=10**6))
    with pytest.raises(ValueError, match=">= 2 clients"):
        secagg_cost(100, 1)


def test_only_linear_strategies_get_a_secagg_cost() -> None:
    rows = comm_table([(64, 64), (64, 128)], ("full", "fedit", "ffa", "fedex", "flora", "fedsb"), rank=4, clients=5)
    costs = secagg_costs(rows, 5, SecAggConfig(enabled=True))
    assert {name for name, cost in costs.items() if cost is not None} == {"fedit", "ffa", "fedsb"}
    for row in rows:
        cost = costs[row.strategy]
        if cost is not None:
            assert cost.vector_entries == 1 + row.upload + 1  # weight, the update, the masked train_loss


def test_cli_prints_the_secagg_block_and_writes_it_to_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "comm.json"
    code = cli.main(["comm", "--model", "llama-3.2-1b", "--clients", "10", "--strategies", "fedit,fedex,fedsb",
                     "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "SecAgg+ bytes per client per round" in text and "refused: not linear" in text
    payload = json.loads(out.read_text())
    fedit = next(r for r in payload["strategies"] if r["strategy"] == "fedit")
    block = payload["secagg"]["fedit"]
    assert payload["secagg"]["fedex"] is None
    assert block["modulus_bits"] == 39 and block["vector_entries"] == fedit["upload"] + 2
    assert block["secagg_bytes"] == secagg_cost(fedit["upload"], 10).total
    assert block["with_secagg_bytes"] == fedit["download_bytes"] + block["secagg_bytes"]
    # the masked vector: 5 bytes per entry (m = 39) instead of float32's 4, plus headers
    assert 1.25 * fedit["upload_bytes"] < block["up_bytes"]["collect"] < 1.25 * fedit["upload_bytes"] + 1000


def test_cli_secagg_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["comm", "--model", "llama-3.2-1b", "--secagg-bits", "40"]) == 2
    assert "--secagg-bits" in capsys.readouterr().err
    with pytest.raises(CommError, match="--clients"):
        report("llama-3.2-1b", clients=2**20, secagg=SecAggConfig(enabled=True, quantization_bits=30, max_weight=10**6))
