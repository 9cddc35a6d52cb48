"""Reconstructing a client's secret from its neighbours' Shamir shares, verified, and unmasking.

Shamir shares carry no integrity check, so one corrupt share silently yields a wrong secret. Every
secret the server reconstructs can be checked, though: a private-mask seed against the SHA-256
commitment its owner sent at share-keys, an ``sk1`` against the ``pk1`` its owner published at
set-up. :func:`reconstruct` combines exactly ``t`` shares at a time (what PyCryptodome's
``Shamir.combine`` expects), trying the ``t``-windows of a cyclic order until one verifies (with
one bad share among ``s ≥ t + 1``, some window avoids it), then tests every other share against
``t − 1`` good ones, so the holders of bad shares are named and dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import numpy as np
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key, public_key_to_bytes

from contract import secagg as wire

Verify = Callable[[bytes], bool]


def seed_check(commitment: bytes) -> Verify:
    """A seed is right if it hashes to its owner's commitment."""
    return lambda secret: hashlib.sha256(secret).digest() == commitment


def key_check(pk1: bytes) -> Verify:
    """An ``sk1`` is right if its public key is the ``pk1`` its owner published."""

    def verify(secret: bytes) -> bool:
        try:
            return public_key_to_bytes(bytes_to_private_key(secret).public_key()) == pk1
        except (ValueError, TypeError):
            return False

    return verify


def _combine(shares: list[bytes], verify: Verify) -> bytes | None:
    try:
        secret = combine_shares(shares)
    except (ValueError, IndexError):
        return None
    return secret if verify(secret) else None


def reconstruct(shares: Mapping[int, bytes], threshold: int, verify: Verify) -> tuple[bytes | None, list[int]]:
    """``(secret, holders with bad shares)`` from ``holder -> share``; ``(None, [])`` if impossible."""
    holders = sorted(shares)
    n = len(holders)
    if n < threshold:
        return None, []
    for start in range(n):
        window = [holders[(start + i) % n] for i in range(threshold)]
        secret = _combine([shares[h] for h in window], verify)
        if secret is not None:
            break
    else:
        return None, []
    base = [shares[h] for h in window[: threshold - 1]]
    bad = [h for h in holders if h not in window and _combine([*base, shares[h]], verify) is None]
    return secret, bad


def share_index(share: bytes) -> int:
    """The 1-based Shamir index Flower's ``create_shares`` writes in a share's first 4 bytes."""
    return int.from_bytes(share[:4], "little", signed=False)


def remove_masks(
    total: np.ndarray,
    *,
    seeds: Mapping[int, bytes],
    dead_keys: Mapping[int, bytes],
    masked_with: Mapping[int, set[int]],
    pk1s: Mapping[int, bytes],
    modulus_bits: int,
) -> np.ndarray:
    """The sum of the survivors' vectors without their masks (mod ``2^m``).

    ``total`` is ``Σ_{a∈A} y_a`` over the survivors ``A`` (the keys of ``seeds``); each ``y_a`` holds
    ``a``'s private mask and, for every ``j`` in ``masked_with[a]``, ``±PRG(s_aj)``. Pairs inside ``A``
    cancel; for a dropped ``d`` (keys of ``dead_keys``) the server rebuilds ``s_ad`` from ``sk1_d`` and
    ``pk1_a`` and takes out what ``a`` added.
    """
    size = total.size
    out = np.asarray(total, dtype=np.int64)
    for seed in seeds.values():
        out = out - wire.mask(seed, modulus_bits, size)
    for dead, sk1 in dead_keys.items():
        private = bytes_to_private_key(sk1)
        for active in seeds:
            if dead in masked_with[active]:
                pairwise = wire.mask(generate_shared_key(private, bytes_to_public_key(pk1s[active])), modulus_bits, size)
                out = out - wire.pairwise_sign(active, dead) * pairwise
    return wire.reduce_mod(out, modulus_bits)
