"""Checks on SecAgg+ replies: client replies are untrusted, and one bad reply drops only its sender.

Each ``check_*`` returns what the driver keeps from a well-formed reply or raises :class:`Malformed`
with the reason (logged and kept in the round's dropouts).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ConfigRecord, RecordDict
from flwr.supercore.primitives.asymmetric import bytes_to_public_key

from contract import secagg as wire


class Malformed(ValueError):
    """A reply the protocol cannot use; the message says why."""


def _ids(record: ConfigRecord, key: str) -> list[int]:
    value = record.get(key, [])  # absent: empty (contract.secagg.compact_record)
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise Malformed(f"`{key}` is not a list of node ids")
    if len(set(value)) != len(value):
        raise Malformed(f"`{key}` repeats a node")
    return [int(v) for v in value]


def _blobs(record: ConfigRecord, key: str, length: int) -> list[bytes]:
    value = record.get(key, [])
    if not isinstance(value, list) or any(not isinstance(v, bytes) for v in value):
        raise Malformed(f"`{key}` is not a list of bytes")
    if len(value) != length:
        raise Malformed(f"`{key}` has {len(value)} entries for {length} nodes")
    return [v for v in value if isinstance(v, bytes)]


def check_keys(record: ConfigRecord, seen: set[bytes]) -> tuple[bytes, bytes]:
    """Set-up reply: two distinct, parseable public keys no other node sent."""
    keys = []
    for key in (wire.PK1, wire.PK2):
        value = record.get(key)
        if not isinstance(value, bytes):
            raise Malformed(f"set-up reply: `{key}` is not bytes")
        try:
            bytes_to_public_key(value)
        except (ValueError, TypeError) as exc:
            raise Malformed(f"set-up reply: `{key}` is not a public key ({exc})") from None
        keys.append(value)
    if keys[0] == keys[1] or set(keys) & seen:
        raise Malformed("set-up reply: public keys repeat (its own or another node's)")
    seen.update(keys)
    return keys[0], keys[1]


def check_share_keys(record: ConfigRecord, group: set[int]) -> tuple[dict[int, bytes], bytes]:
    """Share-keys reply: one ciphertext for each other member of the node's group, and a commitment."""
    destinations = _ids(record, wire.DESTINATIONS)
    if set(destinations) != group:
        raise Malformed(f"share-keys reply: shares for {sorted(destinations)}, its share group is {sorted(group)}")
    ciphertexts = _blobs(record, wire.CIPHERTEXTS, len(destinations))
    commitment = record.get(wire.SEED_COMMITMENT)
    if not isinstance(commitment, bytes) or len(commitment) != 32:
        raise Malformed("share-keys reply: the seed commitment is not a 32-byte hash")
    return dict(zip(destinations, ciphertexts, strict=True)), commitment


def check_masked(
    content: RecordDict, *, size: int, modulus_bits: int, sources: set[int]
) -> tuple[np.ndarray, set[int], dict[str, int | float]]:
    """Collect reply: one masked vector of the round's size, dtype and ring; whom it masked with
    (a subset of the shares forwarded to it); plaintext metrics restricted to the public ones."""
    if wire.VECTOR not in content.array_records:
        raise Malformed(f"masked-vector reply lacks the `{wire.VECTOR}` record")
    record = content.array_records[wire.VECTOR]
    if list(record) != [wire.MASKED]:
        raise Malformed(f"masked-vector reply: `{wire.VECTOR}` must hold exactly `{wire.MASKED}`")
    try:
        vector = record[wire.MASKED].numpy()
    except Exception as exc:  # noqa: BLE001 - an undecodable array is one more malformed reply
        raise Malformed(f"masked vector does not decode ({type(exc).__name__})") from None
    shape = (size, wire.wire_bytes(modulus_bits))
    if vector.dtype != np.uint8 or vector.shape != shape:
        raise Malformed(f"masked vector is {vector.shape} {vector.dtype}, the round needs {shape} uint8")
    vector = wire.unpack(vector, modulus_bits)
    if vector.size and (int(vector.min()) < 0 or int(vector.max()) >= 2**modulus_bits):
        raise Malformed(f"masked vector has values outside the ring Z_2^{modulus_bits}")
    masked_with = _ids(content.config_records[wire.SECAGG], wire.MASKED_WITH)
    if not set(masked_with) <= sources:
        raise Malformed(f"masked with {sorted(set(masked_with) - sources)}, whose shares it never got")
    public: dict[str, int | float] = {}
    if wire.PUBLIC in content.metric_records:
        for name, value in content.metric_records[wire.PUBLIC].items():
            if name in wire.PUBLIC_METRICS and isinstance(value, (int, float)) and math.isfinite(value):
                public[name] = value
    return vector, set(masked_with), public


def check_unmask(record: ConfigRecord, active: list[int], dead: list[int]) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Unmask reply: seed shares only for nodes asked as active, key shares only for dropped ones."""
    out = []
    for nodes_key, shares_key, allowed in (
        (wire.SEED_SHARE_NODES, wire.SEED_SHARES, set(active)),
        (wire.KEY_SHARE_NODES, wire.KEY_SHARES, set(dead)),
    ):
        nodes = _ids(record, nodes_key)
        if not set(nodes) <= allowed:
            raise Malformed(f"unmask reply: `{nodes_key}` names {sorted(set(nodes) - allowed)}, which were not asked for")
        out.append(dict(zip(nodes, _blobs(record, shares_key, len(nodes)), strict=True)))
    return out[0], out[1]
