"""Versioned FedEx-LoRA base deltas (strategies.maths.residual_log): ``docs/exactness.md §4``."""

from __future__ import annotations

import numpy as np
import pytest

from contract import advance_base, canonical_step, encode_base_delta, encode_splits
from strategies.maths.residual import fedex_aggregate
from strategies.maths.residual_log import ResidualLog
from strategies.maths.transport import ResidualTransport

SCALE = 2.0
# module -> ((m, n), fan_in_fan_out)
MODULES = {"q": ((48, 32), False), "c_attn": ((48, 32), True), "v": ((32, 32), False)}
RANK = 4


def _train(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for local training: a client moves both factors away from the broadcast."""
    return a + 0.1 * rng.standard_normal(a.shape), b + 0.05 * rng.standard_normal(b.shape)


def _catch_up(log: ResidualLog, held: dict[str, np.ndarray], version: int) -> tuple[dict[str, np.ndarray], int]:
    """What a node does with the server's message: through the real wire format and contract code."""
    delta = log.delta_since(version)
    wire = {name: (t.arrays[0], t.arrays[1]) if t.form == "factored" else t.arrays[0] for name, t in delta.modules.items()}
    start = held if delta.since == version and delta.since != 0 else {}
    new = {**start, **advance_base(start, encode_base_delta(wire), encode_splits(delta.splits))}
    return new, delta.version


def _run(rounds: int, k: int, skip: dict[int, set[int]], budget: float, dtype: type) -> dict:
    """T FedEx rounds; client c sits out the rounds in skip[c] and catches up from the log."""
    rng = np.random.default_rng(7)
    shapes = {name: shape for name, (shape, _) in MODULES.items()}
    a_glob = {  # each (r, n)
        name: rng.standard_normal((RANK, n)) / np.sqrt(n) for name, ((_, n), _) in MODULES.items()
    }
    b_glob = {name: np.zeros((m, RANK)) for name, ((m, _), _) in MODULES.items()}
    log = ResidualLog(shapes, dtype=dtype, budget=budget)
    clients: list[dict[str, np.ndarray]] = [{} for _ in range(k)]  # canonical C_v per module, (m, n)
    versions = [0] * k
    ideal = {name: np.zeros(shape) for name, shape in shapes.items()}  # Σ_t s·ΔW_res^t in float64, (m, n)
    for t in range(1, rounds + 1):
        present = [c for c in range(k) if t not in skip.get(c, set())]
        replies = {c: {} for c in present}
        for c in present:
            if versions[c] != log.version:  # catch up before training (the base it trains on)
                clients[c], versions[c] = _catch_up(log, clients[c], versions[c])
            for name in MODULES:
                replies[c][name] = _train(rng, a_glob[name], b_glob[name])
        p = np.full(len(present), 1.0 / len(present))
        round_res = {}
        for name in MODULES:
            agg = fedex_aggregate([replies[c][name][0] for c in present], [replies[c][name][1] for c in present], p, SCALE)
            a_glob[name], b_glob[name] = agg.a_bar, agg.b_bar
            round_res[name] = agg.residual
            ideal[name] += agg.residual.to_dense()
        assert log.record(round_res) == t
        assert log.stored_elements <= (1 + budget) * log.dense_elements
    for c in range(k):  # everybody catches up at the end
        if versions[c] != log.version:
            clients[c], versions[c] = _catch_up(log, clients[c], versions[c])
    return {"clients": clients, "ideal": ideal, "log": log}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("budget", [1.0, 0.25, 0.0])
def test_client_that_skips_rounds_ends_bit_identical_to_one_that_took_part(dtype: type, budget: float) -> None:
    # Prepare / Execute: 5 rounds, 3 clients; client 1 skips round 2, client 2 skips rounds 2-4
    out = _run(rounds=5, k=3, skip={1: {2}, 2: {2, 3, 4}}, budget=budget, dtype=dtype)
    canonical = out["log"].canonical()
    for name in MODULES:
        # every node holds the server's canonical C_T bit for bit, whatever it skipped ...
        for c, client in enumerate(out["clients"]):
            assert client[name].dtype == np.float32
            assert client[name].tobytes() == canonical[name].tobytes(), f"client {c} {name}"
        # ... and C_T is W0^T − W0 = Σ_t s·ΔW_res^t up to float32 rounding of each step
        np.testing.assert_allclose(canonical[name], out["ideal"][name], rtol=0, atol=2e-5)


def test_factored_and_dense_paths_reach_the_same_canonical_base() -> None:
    # budget 1.0 keeps every round (factored catch-up); budget 0.0 forces C_T densely
    kept = _run(rounds=4, k=2, skip={1: {2, 3}}, budget=1.0, dtype=np.float32)
    dense = _run(rounds=4, k=2, skip={1: {2, 3}}, budget=0.0, dtype=np.float32)
    for name in MODULES:
        assert kept["clients"][1][name].tobytes() == dense["clients"][1][name].tobytes()


def test_negative_control_a_client_without_the_missed_residual_is_stale() -> None:
    out = _run(rounds=3, k=2, skip={}, budget=1.0, dtype=np.float64)
    log = out["log"]
    last = log.delta_since(2)  # only round 3: not what a client at version 1 needs
    full = log.delta_since(1)
    name = "q"
    assert np.abs(last.modules[name].to_dense() - full.modules[name].to_dense()).max() > 1e-4


def test_incremental_deltas_concatenate_factors_and_collapse_bounds_memory() -> None:
    shapes = {"q": (48, 32)}
    rng = np.random.default_rng(0)
    rounds = []
    for _ in range(4):  # rank-2 factored residuals: 2·80 = 160 numbers each vs 1536 dense
        u, v = rng.standard_normal((48, 2)), rng.standard_normal((2, 32))
        rounds.append(ResidualTransport.from_factors(u, v))
    log = ResidualLog(shapes, dtype=np.float64, budget=1.0)
    for t in rounds:
        log.record({"q": t})
    assert (log.version, log.floor) == (4, 0)
    delta = log.delta_since(1)  # rounds 2..4: 6 columns, still factored
    assert delta.since == 1 and delta.version == 4
    assert delta.modules["q"].form == "factored" and delta.modules["q"].columns == 6
    assert delta.splits == {"q": (2, 2, 2)}
    np.testing.assert_allclose(
        delta.modules["q"].to_dense(), sum(t.to_dense() for t in rounds[1:]), rtol=0, atol=1e-12
    )
    assert log.delta_since(4).elements == 0  # up to date: an empty factored delta
    # a tight budget collapses old rounds into the dense base; stale clients then rebase from 0
    tight = ResidualLog(shapes, dtype=np.float64, budget=0.3)  # 0.3·1536 = 460 numbers: 2 rounds
    for t in rounds:
        tight.record({"q": t})
        assert tight.stored_elements <= 1.3 * tight.dense_elements
    assert tight.floor == 2
    stale = tight.delta_since(1)
    assert stale.since == 0 and stale.modules["q"].form == "dense" and not stale.splits
    canonical = np.zeros((48, 32), np.float32)  # the recurrence every node runs, here by hand
    for t in rounds:
        u, v = t.astype(np.float32).arrays
        canonical = canonical_step(canonical, u, v)
    assert stale.modules["q"].arrays[0].tobytes() == canonical.tobytes()  # C_T itself, absolute
    recent = tight.delta_since(2)
    assert recent.since == 2 and recent.modules["q"].form == "factored"


def test_log_rejects_wrong_modules_shapes_and_versions() -> None:
    log = ResidualLog({"q": (4, 3)})
    with pytest.raises(ValueError, match="missing"):
        log.record({})
    with pytest.raises(ValueError, match="expects"):
        log.record({"q": np.zeros((3, 4))})
    log.record({"q": np.ones((4, 3))})
    with pytest.raises(ValueError, match="not in 0..1"):
        log.delta_since(2)
    with pytest.raises(ValueError):
        ResidualLog({"q": (4, 3)}, budget=-1)
