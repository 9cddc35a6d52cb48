"""The node's side of SecAgg+'s collect stage: train, then send only the masked vector.

Bell et al., arXiv:2002.06287, §3 (``collect masked vectors``). The request is the round's train
instruction plus the key shares other nodes encrypted for this node. The node

1. decrypts the shares; one it cannot decrypt or whose sender and recipient do not match is
   skipped (no pairwise mask with that sender; the server sees it in ``masked-with``),
2. trains exactly as without SecAgg (``train``: the ClientApp's own train handler),
3. encodes ``[w, w·q(u), w·q(train_loss)]`` with ``u`` = payload − received arrays
   (:class:`contract.secagg.Quantiser`), adds its private mask and one pairwise mask per
   neighbour it kept (+ if its node id is larger, − if smaller), reduces mod ``2^m``,
4. replies with that vector, the neighbours it masked with, and the plaintext protocol metrics
   (:data:`contract.secagg.PUBLIC_METRICS`); the payload, ``num-examples``, ``train_loss`` and any
   plugin report never leave the node.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import WARNING

import numpy as np
from cryptography.fernet import InvalidToken
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import share_keys_plaintext_separate
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from client.secagg.stages import bytes_list, field, id_list
from client.secagg.state import RoundSecrets
from contract import ARRAYS, METRICS, NUM_EXAMPLES
from contract import secagg as wire

Handler = Callable[[Message, Context], Message]


def receive_shares(secrets: RoundSecrets, sources: list[int], ciphertexts: list[bytes]) -> list[int]:
    """Decrypt and keep the shares sent to this node; return the senders kept, in order."""
    if len(sources) != len(ciphertexts) or len(set(sources)) != len(sources):
        raise ValueError("SecAgg collect: source and ciphertext lists differ in length or repeat a node")
    sk2 = bytes_to_private_key(secrets.sk2)
    kept = []
    for src, ciphertext in zip(sources, ciphertexts, strict=True):
        if src == secrets.node_id or src not in secrets.pk2s:
            log(WARNING, "SecAgg collect: node %d: ignoring a share from node %d, not a neighbour", secrets.node_id, src)
            continue
        try:
            plaintext = decrypt(generate_shared_key(sk2, bytes_to_public_key(secrets.pk2s[src])), ciphertext)
        except (InvalidToken, ValueError, TypeError):
            log(WARNING, "SecAgg collect: node %d: the share from node %d does not decrypt; skipped", secrets.node_id, src)
            continue
        actual_src, dst, seed_share, key_share = share_keys_plaintext_separate(plaintext)
        if (actual_src, dst) != (src, secrets.node_id):
            log(WARNING, "SecAgg collect: node %d: share relayed from %d is addressed %d -> %d; skipped",
                secrets.node_id, src, actual_src, dst)
            continue
        secrets.seed_shares[src] = seed_share
        secrets.key_shares[src] = key_share
        kept.append(src)
    if len(kept) + 1 < secrets.threshold:
        raise ValueError(f"SecAgg collect: {len(kept) + 1} share holders < threshold {secrets.threshold}")
    return kept


def masked_vector(secrets: RoundSecrets, plain: np.ndarray, masked_with: list[int]) -> np.ndarray:
    """``plain`` + private mask ± pairwise masks, mod ``2^m``, packed for the wire."""
    m = secrets.modulus_bits
    total = np.asarray(plain, dtype=np.int64) + wire.mask(secrets.seed, m, plain.size)
    sk1 = bytes_to_private_key(secrets.sk1)
    for other in masked_with:
        pairwise = wire.mask(generate_shared_key(sk1, bytes_to_public_key(secrets.pk1s[other])), m, plain.size)
        total = total + wire.pairwise_sign(secrets.node_id, other) * pairwise
    return wire.pack(wire.reduce_mod(total, m), m)


def _scalar(metrics: MetricRecord, name: str) -> float:
    value = metrics.get(name)
    if isinstance(value, list) or value is None:
        raise ValueError(f"SecAgg collect: the train reply's `{name}` is missing or not a number")
    return value


def collect(msg: Message, context: Context, train: Handler) -> Message:
    """Stage 3 (module docstring). A failed training reply is passed on unchanged (an error)."""
    stage = "collect"
    request = msg.content.config_records[wire.SECAGG]
    server_round = field(request, wire.ROUND, int, stage=stage)
    secrets = RoundSecrets.load(context, stage=wire.SHARE_KEYS, server_round=server_round)
    kept = receive_shares(
        secrets, id_list(request, wire.SOURCES, stage=stage), bytes_list(request, wire.CIPHERTEXTS, stage=stage)
    )
    reply = train(msg, context)
    if reply.has_error():
        RoundSecrets.forget(context)
        return reply
    received = msg.content.array_records[ARRAYS]
    layout = wire.VectorLayout.of(received)
    payload = {key: array.numpy() for key, array in reply.content.array_records[ARRAYS].items()}
    update = layout.flatten(payload) - layout.flatten({k: a.numpy() for k, a in received.items()})
    if not np.all(np.isfinite(update)):
        raise ValueError("SecAgg collect: the trained payload is not finite; nothing to mask")
    metrics = reply.content.metric_records[METRICS]
    num_examples = _scalar(metrics, NUM_EXAMPLES)
    if secrets.weighted and num_examples > secrets.max_weight:
        log(WARNING, "SecAgg: node %d weighs %d examples as secagg.max-weight = %d (raise it to weigh them all)",
            secrets.node_id, num_examples, secrets.max_weight)
    quantiser = wire.Quantiser(secrets.clip_range, secrets.bits, secrets.max_weight, secrets.weighted)
    masked_metrics = np.array([_scalar(metrics, name) for name in layout.metrics], dtype=np.float64)
    plain = quantiser.encode(update, masked_metrics, int(num_examples))
    vector = masked_vector(secrets, plain, kept)
    secrets.masked_with = kept
    secrets.stage = wire.COLLECT
    secrets.save(context)
    content = RecordDict(
        {
            wire.VECTOR: ArrayRecord({wire.MASKED: Array(vector)}),
            wire.SECAGG: wire.compact_record({wire.MASKED_WITH: kept}),
        }
    )
    public = {name: metrics[name] for name in wire.PUBLIC_METRICS if name in metrics}
    if public:
        content[wire.PUBLIC] = MetricRecord(public)
    return Message(content=content, reply_to=msg)
