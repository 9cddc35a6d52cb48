"""The node's side of the SecAgg+ key stages: set-up, share-keys and unmask.

Bell et al., arXiv:2002.06287, §3 (Flower's ``secaggplus_mod`` follows the same steps for its
legacy API). Each function takes the server's request record and the node's ``Context`` and
returns the reply record; it raises on a request it must refuse, which Flower turns into an error
reply (the server then treats the node as dropped). All cryptography is Flower's:
``flwr.supercore.primitives.asymmetric`` (ECDH key pairs on SECP384R1),
``flwr.common.secure_aggregation.crypto`` (Shamir sharing, HKDF key agreement, Fernet encryption)
and ``secaggplus_utils`` (the share plaintext format).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.common.secure_aggregation.crypto.shamir import create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import encrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import share_keys_plaintext_concat
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

from client.secagg.state import RoundSecrets
from contract import secagg as wire


def field(record: ConfigRecord, key: str, kind: type | tuple[type, ...], *, stage: str) -> Any:
    """``record[key]``, which must be of ``kind`` (bool is not an int here)."""
    if key not in record:
        raise ValueError(f"SecAgg {stage}: the request lacks `{key}`")
    value = record[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ValueError(f"SecAgg {stage}: `{key}` must be {kind}, got a bool")
    if not isinstance(value, kind):
        raise ValueError(f"SecAgg {stage}: `{key}` must be {kind}, got {type(value).__name__}")
    return value


def id_list(record: ConfigRecord, key: str, *, stage: str) -> list[int]:
    """A list of node ids (absent: empty, see ``contract.secagg.compact_record``)."""
    value = field(record, key, list, stage=stage) if key in record else []
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ValueError(f"SecAgg {stage}: `{key}` must be a list of node ids")
    return [int(v) for v in value]


def bytes_list(record: ConfigRecord, key: str, *, stage: str) -> list[bytes]:
    """A list of byte strings (absent: empty)."""
    value = field(record, key, list, stage=stage) if key in record else []
    if any(not isinstance(v, bytes) for v in value):
        raise ValueError(f"SecAgg {stage}: `{key}` must be a list of bytes")
    return list(value)


def setup(request: ConfigRecord, context: Context, node_id: int) -> ConfigRecord:
    """Stage 1: store the round's parameters, make two key pairs, reply with the public keys."""
    stage = "set-up"
    server_round = field(request, wire.ROUND, int, stage=stage)
    threshold = field(request, wire.THRESHOLD, int, stage=stage)
    bits = field(request, wire.BITS, int, stage=stage)
    modulus_bits = field(request, wire.MODULUS_BITS, int, stage=stage)
    if threshold < 2 or not 2 <= bits <= 30 or not bits < modulus_bits <= wire.MAX_MODULUS_BITS:
        raise ValueError(f"SecAgg {stage}: unusable parameters t={threshold}, b={bits}, m={modulus_bits}")
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    secrets = RoundSecrets(
        server_round=server_round,
        stage=wire.SETUP,
        node_id=node_id,
        threshold=threshold,
        clip_range=float(field(request, wire.CLIP_RANGE, float, stage=stage)),
        bits=bits,
        modulus_bits=modulus_bits,
        max_weight=field(request, wire.MAX_WEIGHT, int, stage=stage),
        weighted=field(request, wire.WEIGHTED, bool, stage=stage),
        sk1=private_key_to_bytes(sk1),
        pk1=public_key_to_bytes(pk1),
        sk2=private_key_to_bytes(sk2),
        pk2=public_key_to_bytes(pk2),
    )
    secrets.save(context)
    return ConfigRecord({wire.PK1: secrets.pk1, wire.PK2: secrets.pk2})


def share_keys(request: ConfigRecord, context: Context) -> ConfigRecord:
    """Stage 2: check the neighbours' keys, Shamir-share the mask seed and sk1, encrypt a share each."""
    stage = "share-keys"
    server_round = field(request, wire.ROUND, int, stage=stage)
    secrets = RoundSecrets.load(context, stage=wire.SETUP, server_round=server_round)
    nodes = id_list(request, wire.NODES, stage=stage)
    pk1s = bytes_list(request, wire.PK1_LIST, stage=stage)
    pk2s = bytes_list(request, wire.PK2_LIST, stage=stage)
    if not len(nodes) == len(pk1s) == len(pk2s) or len(set(nodes)) != len(nodes):
        raise ValueError(f"SecAgg {stage}: node and key lists differ in length or repeat a node")
    if len(nodes) < secrets.threshold:
        raise ValueError(f"SecAgg {stage}: {len(nodes)} neighbours < threshold {secrets.threshold}")
    if len(set(pk1s) | set(pk2s)) != 2 * len(nodes):
        raise ValueError(f"SecAgg {stage}: some public keys are identical")
    if secrets.node_id not in nodes:
        raise ValueError(f"SecAgg {stage}: this node ({secrets.node_id}) is not in its own share group")
    own = nodes.index(secrets.node_id)
    if (pk1s[own], pk2s[own]) != (secrets.pk1, secrets.pk2):
        raise ValueError(f"SecAgg {stage}: the server relayed other public keys for this node")
    secrets.seed = os.urandom(32)
    seed_shares = create_shares(secrets.seed, secrets.threshold, len(nodes))
    key_shares = create_shares(secrets.sk1, secrets.threshold, len(nodes))
    sk2 = bytes_to_private_key(secrets.sk2)
    destinations, ciphertexts = [], []
    for idx, node in enumerate(nodes):
        if node == secrets.node_id:
            secrets.seed_shares[node], secrets.key_shares[node] = seed_shares[idx], key_shares[idx]
            continue
        shared = generate_shared_key(sk2, bytes_to_public_key(pk2s[idx]))
        plaintext = share_keys_plaintext_concat(secrets.node_id, node, seed_shares[idx], key_shares[idx])
        destinations.append(node)
        ciphertexts.append(encrypt(shared, plaintext))
    secrets.neighbours = nodes
    secrets.pk1s = dict(zip(nodes, pk1s, strict=True))
    secrets.pk2s = dict(zip(nodes, pk2s, strict=True))
    secrets.stage = wire.SHARE_KEYS
    secrets.save(context)
    return wire.compact_record(
        {
            wire.DESTINATIONS: destinations,
            wire.CIPHERTEXTS: ciphertexts,
            wire.SEED_COMMITMENT: hashlib.sha256(secrets.seed).digest(),
        }
    )


def unmask(request: ConfigRecord, context: Context) -> ConfigRecord:
    """Stage 4: hand over seed shares of surviving neighbours and sk1 shares of dropped ones, then
    forget the round. Never both for one node: that would let the server unmask its vector."""
    stage = "unmask"
    server_round = field(request, wire.ROUND, int, stage=stage)
    secrets = RoundSecrets.load(context, stage=wire.COLLECT, server_round=server_round)
    active = id_list(request, wire.ACTIVE, stage=stage)
    dead = id_list(request, wire.DEAD, stage=stage)
    if set(active) & set(dead):
        raise ValueError(f"SecAgg {stage}: nodes {sorted(set(active) & set(dead))} are listed both active and dropped")
    if secrets.node_id in dead:
        raise ValueError(f"SecAgg {stage}: the server lists this node as dropped")
    if len(active) < secrets.threshold:
        raise ValueError(f"SecAgg {stage}: {len(active)} surviving neighbours < threshold {secrets.threshold}")
    unknown = (set(active) | set(dead)) - set(secrets.neighbours)
    if unknown:
        raise ValueError(f"SecAgg {stage}: nodes {sorted(unknown)} are not in this node's share group")
    seed_nodes = [n for n in active if n in secrets.seed_shares]
    key_nodes = [n for n in dead if n in secrets.key_shares]
    RoundSecrets.forget(context)
    return wire.compact_record(
        {
            wire.SEED_SHARE_NODES: seed_nodes,
            wire.SEED_SHARES: [secrets.seed_shares[n] for n in seed_nodes],
            wire.KEY_SHARE_NODES: key_nodes,
            wire.KEY_SHARES: [secrets.key_shares[n] for n in key_nodes],
        }
    )
