"""Analytic SecAgg+ bytes per client per round: what ``corolla comm``'s SecAgg block prints.

One SecAgg+ round (``server.secagg``; Bell et al., arXiv:2002.06287, §3) costs each client four round
trips on top of the train download. With ``K`` sampled clients, share groups of ``G`` clients
(``contract.secagg.group_size``, ``G = K`` at the default ``secagg.num-shares = 1``), an upload of
``P`` parameters and a ring ``Z_{2^m}`` (``Quantiser.modulus_bits(K)``), and no dropouts:

=============  ======================================================  =======================================
stage          down (server -> client)                                 up (client -> server)
=============  ======================================================  =======================================
set-up         7 scalars + 1 flag (t, G, c, b, m, max-weight, ...)     2 public keys (PEM, SECP384R1)
share-keys     round, G node ids, 2·G public keys                      G−1 ids, G−1 ciphertexts, a commitment
collect        round, G−1 sender ids, G−1 ciphertexts                  the masked vector: ``(1 + P + 1)``
                                                                       entries of ``ceil(m/8)`` bytes (npy),
                                                                       G−1 ids, the plaintext protocol metrics
unmask         round, G active ids                                     G ids, G seed shares
=============  ======================================================  =======================================

Every count is what Flower's ``count_bytes`` books (``server.metering``): 8 bytes per int or float,
1 per bool, the length of each bytes value, plus every key's length; an array is its npy bytes.
Sizes that come from the cryptography are taken from Flower's own primitives: a PEM public key
(215 bytes on SECP384R1), a PEM private key, a Shamir share (4-byte index + 16 bytes per 16-byte chunk
of the padded secret) and a Fernet token (base64 of version, timestamp, IV, AES-CBC blocks and HMAC).
The train download itself is unchanged and not part of these numbers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from contract.base_delta import BASE_VERSION
from contract.frozen import FROZEN_CONFIRMED
from contract import secagg as wire
from contract.secagg import Quantiser, SecAggConfig, group_size

SEED_BYTES = 32  # the private-mask seed (client.secagg.stages: os.urandom(32))
COMMITMENT_BYTES = 32  # sha256 of the seed
DEFAULT_PUBLIC = (BASE_VERSION, FROZEN_CONFIRMED)  # the plaintext metrics every train reply carries (DP adds epsilon)


@lru_cache(maxsize=1)
def key_sizes() -> tuple[int, int]:
    """``(public, private)`` PEM key lengths of Flower's SecAgg key pairs (SECP384R1; fixed)."""
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, private_key_to_bytes, public_key_to_bytes

    private, public = generate_key_pairs()
    return len(public_key_to_bytes(public)), len(private_key_to_bytes(private))


def share_bytes(secret: int) -> int:
    """One Shamir share of a ``secret``-byte secret: 4-byte index + the PKCS#7-padded secret's chunks."""
    return 4 + 16 * (secret // 16 + 1)


def fernet_bytes(plaintext: int) -> int:
    """A Fernet token of ``plaintext`` bytes: base64url(version 1 + time 8 + IV 16 + AES-CBC + HMAC 32)."""
    raw = 1 + 8 + 16 + 16 * (plaintext // 16 + 1) + 32
    return 4 * ((raw + 2) // 3)


def npy_bytes(shape: tuple[int, ...], dtype: str = "|u1") -> int:
    """``np.save`` size of a C-ordered array (Flower's ``Array`` data)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return len(header.getvalue()) + int(np.prod(shape)) * np.dtype(dtype).itemsize


def _scalars(*keys: str) -> int:
    return sum(len(k) + 8 for k in keys)


def _ids(key: str, n: int) -> int:
    return len(key) + 8 * n if n else 0  # an empty list is left out (contract.secagg.compact_record)


def _blobs(key: str, n: int, size: int) -> int:
    return len(key) + n * size if n else 0


@dataclass(frozen=True)
class SecAggCost:
    """Bytes one client receives (down) and sends (up) in each SecAgg stage of one round."""

    clients: int
    group: int
    modulus_bits: int
    vector_entries: int
    down: dict[str, int]  # stage name -> bytes
    up: dict[str, int]

    def stage(self, name: str) -> int:
        """Down + up of one stage."""
        return self.down[name] + self.up[name]

    @property
    def total(self) -> int:
        """Everything SecAgg adds per client per round (the masked vector replaces the upload)."""
        return sum(self.down.values()) + sum(self.up.values())


def secagg_cost(
    upload_params: int,
    clients: int,
    config: SecAggConfig | None = None,
    *,
    weighted: bool = True,
    public_metrics: Sequence[str] = DEFAULT_PUBLIC,
) -> SecAggCost:
    """Bytes per client per round of SecAgg+ for ``clients`` sampled clients each uploading
    ``upload_params`` parameters, without dropouts (the module docstring's table).

    Raises
    ------
    ValueError
        If the ring cannot hold the sum (``Quantiser.modulus_bits``), naming the keys to lower.
    """
    config = config or SecAggConfig(enabled=True)
    if upload_params < 1 or clients < 2:
        raise ValueError(f"need an upload of >= 1 parameter and >= 2 clients, got {upload_params} and {clients}")
    quantiser = Quantiser(config.clip_range, config.quantization_bits, config.max_weight, weighted)
    m = quantiser.modulus_bits(clients)
    g = group_size(config.num_shares, clients)
    others = g - 1
    pk, sk = key_sizes()
    ciphertext = fernet_bytes(8 + 8 + 4 + share_bytes(SEED_BYTES) + share_bytes(sk))
    entries = 1 + upload_params + len(wire.MASKED_METRICS)
    down = {
        "set-up": _scalars(wire.ROUND, wire.THRESHOLD, wire.NUM_SHARES, wire.CLIP_RANGE, wire.BITS, wire.MODULUS_BITS,
                           wire.MAX_WEIGHT) + len(wire.WEIGHTED) + 1,
        "share-keys": _scalars(wire.ROUND) + _ids(wire.NODES, g) + 2 * _blobs(wire.PK1_LIST, g, pk),
        "collect": _scalars(wire.ROUND) + _ids(wire.SOURCES, others) + _blobs(wire.CIPHERTEXTS, others, ciphertext),
        "unmask": _scalars(wire.ROUND) + _ids(wire.ACTIVE, g),
    }
    up = {
        "set-up": len(wire.PK1) + len(wire.PK2) + 2 * pk,
        "share-keys": _ids(wire.DESTINATIONS, others) + _blobs(wire.CIPHERTEXTS, others, ciphertext)
        + len(wire.SEED_COMMITMENT) + COMMITMENT_BYTES,
        "collect": len(wire.MASKED) + npy_bytes((entries, wire.wire_bytes(m))) + _ids(wire.MASKED_WITH, others)
        + _scalars(*public_metrics),
        "unmask": _ids(wire.SEED_SHARE_NODES, g) + _blobs(wire.SEED_SHARES, g, share_bytes(SEED_BYTES)),
    }
    assert len(wire.PK1_LIST) == len(wire.PK2_LIST)  # share-keys down counts the two key lists alike
    return SecAggCost(clients, g, m, entries, down, up)
