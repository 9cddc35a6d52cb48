"""Malformed or hostile SecAgg replies drop their sender (or their share), never the round."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from contract import secagg as wire
from server.secagg import SecAggSum
from tests.server.secagg.federation import Federation
from tests.server.secagg.test_driver import assert_sum_matches


def _set(reply: Message, key: str, value: object) -> None:
    reply.content[wire.SECAGG][key] = value


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]


def test_masked_vector_of_the_wrong_shape_is_dropped() -> None:
    def shrink(reply: Message) -> None:
        reply.content[wire.VECTOR] = ArrayRecord({wire.MASKED: Array(np.zeros(3, dtype=np.int64))})

    fed = Federation(k=5, tamper={(1, wire.COLLECT): shrink})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 2, 3, 4])
    assert outcome.dropped[0].node == fed.node(1) and "masked vector is (3,)" in outcome.dropped[0].reason


def test_masked_vector_outside_the_ring_is_dropped() -> None:
    def overflow(reply: Message) -> None:
        packed = reply.content[wire.VECTOR][wire.MASKED].numpy().copy()  # (size, 5): m = 38 bits in 5 bytes
        packed[5, :] = 0xFF  # 2^40 - 1 >= 2^38
        reply.content[wire.VECTOR] = ArrayRecord({wire.MASKED: Array(packed)})

    fed = Federation(k=5, tamper={(4, wire.COLLECT): overflow})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 2, 3])
    assert "outside the ring" in outcome.dropped[0].reason


def test_masked_vector_record_missing_is_dropped() -> None:
    def strip(reply: Message) -> None:
        del reply.content[wire.VECTOR]

    fed = Federation(k=4, tamper={(0, wire.COLLECT): strip})
    assert_sum_matches(fed.run(), fed, [1, 2, 3])


def test_a_share_its_recipient_cannot_decrypt_drops_the_sender() -> None:
    # partition 1 garbles the ciphertext meant for its first destination; that node skips it and
    # does not mask with 1, while 1 masks with it: the server drops 1 and the masks still cancel
    def garble(reply: Message) -> None:
        cts = list(reply.content[wire.SECAGG][wire.CIPHERTEXTS])
        cts[0] = _flip(cts[0], 20)
        _set(reply, wire.CIPHERTEXTS, cts)

    fed = Federation(k=5, tamper={(1, wire.SHARE_KEYS): garble})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 2, 3, 4])
    assert [(d.node, d.stage) for d in outcome.dropped] == [(fed.node(1), "collect")]
    assert "could not use its key share" in outcome.dropped[0].reason


def test_shares_for_the_wrong_nodes_drop_the_sender_at_share_keys() -> None:
    def omit(reply: Message) -> None:
        record = reply.content[wire.SECAGG]
        _set(reply, wire.DESTINATIONS, list(record[wire.DESTINATIONS])[1:])
        _set(reply, wire.CIPHERTEXTS, list(record[wire.CIPHERTEXTS])[1:])

    fed = Federation(k=5, tamper={(3, wire.SHARE_KEYS): omit})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 2, 4])
    assert (outcome.dropped[0].stage, outcome.dropped[0].node) == ("share-keys", fed.node(3))


def test_set_up_reply_without_a_public_key_is_dropped() -> None:
    fed = Federation(k=4, tamper={(2, wire.SETUP): lambda reply: _set(reply, wire.PK1, b"not a key")})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 3])
    assert "not a public key" in outcome.dropped[0].reason


def test_a_corrupt_seed_share_is_found_rejected_and_the_sum_still_decodes() -> None:
    def corrupt(reply: Message) -> None:
        shares = list(reply.content[wire.SECAGG][wire.SEED_SHARES])
        shares[0] = _flip(shares[0], 10)  # index (first 4 bytes) intact: only the value is wrong
        _set(reply, wire.SEED_SHARES, shares)

    fed = Federation(k=5, tamper={(2, wire.UNMASK): corrupt})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 2, 3, 4])
    assert isinstance(outcome, SecAggSum)
    holder, _, reason = outcome.rejected_shares[0]
    assert holder == fed.node(2) and "does not reconstruct" in reason
    assert not outcome.dropped  # its own vector still counts


def test_a_share_with_another_holders_index_is_rejected() -> None:
    def reindex(reply: Message) -> None:
        shares = list(reply.content[wire.SECAGG][wire.SEED_SHARES])
        shares[-1] = (99).to_bytes(4, "little") + shares[-1][4:]
        _set(reply, wire.SEED_SHARES, shares)

    fed = Federation(k=4, tamper={(0, wire.UNMASK): reindex})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 2, 3])
    assert outcome.rejected_shares[0][2] == "share index does not match the holder"


def test_an_unmask_reply_of_the_wrong_types_is_ignored() -> None:
    fed = Federation(k=4, tamper={(1, wire.UNMASK): lambda reply: _set(reply, wire.SEED_SHARES, ["text", "not bytes"])})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 2, 3])
    assert outcome.rejected_shares[0][0] == fed.node(1)


def test_an_unmeterable_reply_does_not_crash_the_meter() -> None:
    # Flower 1.42's ConfigRecord.count_bytes fails on an empty list; a client can send one
    fed = Federation(k=4, tamper={(3, wire.SETUP): lambda reply: _set(reply, "junk", [])})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 2, 3])
    assert fed.ledger.total(phase="secagg-setup", direction="up") > 0
