"""The shared encoding (``contract.secagg``): the documented error bound, clipping, the ring size,
and verified Shamir reconstruction (``server.secagg.reconstruct``)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto.shamir import create_shares

from contract import ConfigError, parse_run_config
from contract import secagg as wire
from contract.secagg import Quantiser, SecAggConfig, VectorLayout, group_size, threshold_count
from server.secagg.reconstruct import reconstruct, seed_check


def _decode_sum(q: Quantiser, updates: np.ndarray, weights: list[int]) -> tuple[int, np.ndarray]:
    layout = VectorLayout(("u",), (updates.shape[1:],), metrics=())
    total = sum(q.encode(u, np.zeros(0), w) for u, w in zip(updates, weights, strict=True))
    weight, update_sum, _ = q.decode(total, layout, len(weights))
    return weight, update_sum


@pytest.mark.parametrize(("bits", "clients"), [(6, 3), (8, 40), (12, 7)])
def test_weighted_mean_error_stays_below_two_c_over_q_for_any_k(bits: int, clients: int) -> None:
    rng = np.random.default_rng(bits)
    q = Quantiser(clip_range=0.5, bits=bits, max_weight=100, weighted=True)
    updates = rng.uniform(-0.5, 0.5, size=(clients, 2000))
    weights = [int(w) for w in rng.integers(1, 100, size=clients)]
    weight, update_sum = _decode_sum(q, updates, weights)
    exact = np.tensordot(np.array(weights) / sum(weights), updates, axes=1)
    err = np.abs(update_sum / weight - exact)
    assert weight == sum(weights)
    assert err.max() < q.error_bound == 2 * 0.5 / (2**bits - 1)
    assert err.max() > q.error_bound / 20  # the bound is tight to within a small factor


def test_entries_beyond_the_clip_range_are_clipped() -> None:
    q = Quantiser(clip_range=1.0, bits=16, max_weight=10, weighted=False)
    weight, update_sum = _decode_sum(q, np.array([[5.0, -7.0, 0.25]]), [1])
    assert weight == 1
    np.testing.assert_allclose(update_sum, [1.0, -1.0, 0.25], atol=q.error_bound)


def test_weights_above_max_weight_are_capped_and_uniform_weighs_one() -> None:
    assert Quantiser(1.0, 8, max_weight=50, weighted=True).weight(80) == 50
    assert Quantiser(1.0, 8, max_weight=50, weighted=False).weight(80) == 1


def test_the_ring_grows_with_clients_and_refuses_to_overflow() -> None:
    q = Quantiser(1.0, bits=22, max_weight=1000, weighted=True)
    assert 2 ** q.modulus_bits(10) > 10 * 1000 * (2**22 - 1) >= 2 ** (q.modulus_bits(10) - 1)
    assert Quantiser(1.0, bits=16, max_weight=1, weighted=False).modulus_bits(3) == 18
    with pytest.raises(ValueError, match="secagg.quantization-bits"):
        Quantiser(1.0, bits=30, max_weight=2**30, weighted=True).modulus_bits(8)


@pytest.mark.parametrize("bits", [5, 24, 32, 39, 62])
def test_packing_round_trips_in_ceil_m_over_8_bytes(bits: int) -> None:
    values = np.random.default_rng(bits).integers(0, 2**bits, size=100, dtype=np.int64)
    packed = wire.pack(values, bits)
    assert packed.dtype == np.uint8 and packed.shape == (100, (bits + 7) // 8)
    np.testing.assert_array_equal(wire.unpack(packed, bits), values)


def test_a_corrupt_sum_is_detected() -> None:
    q = Quantiser(1.0, bits=8, max_weight=10, weighted=True)
    layout = VectorLayout(("u",), ((4,),), metrics=())
    with pytest.raises(ValueError, match="total weight"):
        q.decode(np.array([0, 1, 2, 3, 4]), layout, 2)
    with pytest.raises(ValueError, match="quantisation range"):
        q.decode(np.array([3, 1, 2, 3, 10**9]), layout, 2)


def test_group_size_and_threshold_forms() -> None:
    assert group_size(1.0, 10) == 10 and group_size(0.5, 10) == 5 and group_size(0.4, 10) == 5
    assert group_size(4, 10) == 5 and group_size(0.1, 10) == 3  # odd, at least 3
    assert threshold_count(0.6, 10) == 6 and threshold_count(3, 10) == 3 and threshold_count(0.1, 5) == 2


def test_secagg_section_parses_and_names_bad_values() -> None:
    config = parse_run_config({"secagg.enabled": True, "secagg.threshold": 4, "secagg.clip-range": 0.5})
    section = config.section(SecAggConfig)
    assert (section.enabled, section.threshold, section.clip_range) == (True, 4.0, 0.5)
    with pytest.raises(ConfigError, match="secagg.threshold"):
        parse_run_config({"secagg.threshold": 2.5})
    with pytest.raises(ConfigError, match="secagg.quantization-bits"):
        parse_run_config({"secagg.quantization-bits": 40})


def test_reconstruct_verifies_and_names_the_bad_share() -> None:
    secret = os.urandom(32)
    shares = dict(zip([10, 11, 12, 13, 14], create_shares(secret, 3, 5), strict=True))
    check = seed_check(hashlib.sha256(secret).digest())
    assert reconstruct(shares, 3, check) == (secret, [])
    shares[10] = shares[10][:8] + bytes(8) + shares[10][16:]
    assert reconstruct(shares, 3, check) == (secret, [10])
    assert reconstruct({11: shares[11], 12: shares[12]}, 3, check) == (None, [])
    assert reconstruct(shares, 3, seed_check(bytes(32))) == (None, [])  # nothing matches the commitment
