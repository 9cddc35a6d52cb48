"""The node's SecAgg stages on their own: secrets live only for the round, and bad requests are refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client.secagg import secagg_handlers, stages
from client.secagg.masking import collect
from client.secagg.state import STATE_KEY, RoundSecrets, StageOrderError
from contract import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, TRAIN_LOSS
from contract import secagg as wire
from tests.strategies.fake_grid import set_task_identity

NODES = [101, 102, 103]


def context(node: int) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def setup_record(server_round: int = 1, threshold: int = 2) -> ConfigRecord:
    return ConfigRecord({wire.ROUND: server_round, wire.THRESHOLD: threshold, wire.NUM_SHARES: 3,
                         wire.CLIP_RANGE: 1.0, wire.BITS: 16, wire.MODULUS_BITS: 24, wire.MAX_WEIGHT: 100,
                         wire.WEIGHTED: True})


def keys_up(contexts: dict[int, Context]) -> dict[int, ConfigRecord]:
    return {n: stages.setup(setup_record(), ctx, n) for n, ctx in contexts.items()}


def share_request(keys: dict[int, ConfigRecord], server_round: int = 1) -> ConfigRecord:
    return ConfigRecord({wire.ROUND: server_round, wire.NODES: NODES,
                         wire.PK1_LIST: [keys[n][wire.PK1] for n in NODES], wire.PK2_LIST: [keys[n][wire.PK2] for n in NODES]})


def shared(contexts: dict[int, Context]) -> dict[int, ConfigRecord]:
    """Run set-up and share-keys for all three nodes; return each node's share-keys reply."""
    keys = keys_up(contexts)
    return {n: stages.share_keys(share_request(keys), ctx) for n, ctx in contexts.items()}


def forwarded(replies: dict[int, ConfigRecord], dst: int) -> tuple[list[int], list[bytes]]:
    srcs, cts = [], []
    for src, rec in replies.items():
        if dst in rec[wire.DESTINATIONS]:
            srcs.append(src)
            cts.append(rec[wire.CIPHERTEXTS][list(rec[wire.DESTINATIONS]).index(dst)])
    return srcs, cts


def collect_message(node: int, sources: list[int], cts: list[bytes]) -> Message:
    set_task_identity()
    arrays = ArrayRecord({"r": Array(np.zeros((2, 2), dtype=np.float32))})
    content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord({"server-round": 1}),
                          wire.SECAGG: ConfigRecord({wire.ROUND: 1, wire.SOURCES: sources, wire.CIPHERTEXTS: cts})})
    msg = Message(content, node, wire.COLLECT)
    msg.metadata.__dict__["_message_id"] = f"m{node}"
    return msg


def trained(msg: Message, ctx: Context) -> Message:
    payload = ArrayRecord({"r": Array(np.full((2, 2), 0.25, dtype=np.float32))})
    return Message(RecordDict({ARRAYS: payload, METRICS: MetricRecord({NUM_EXAMPLES: 7, TRAIN_LOSS: 1.5})}), reply_to=msg)


def test_secrets_round_trip_through_a_config_record() -> None:
    ctx = context(101)
    stages.setup(setup_record(), ctx, 101)
    secrets = RoundSecrets.from_record(ctx.state[STATE_KEY])
    secrets.seed_shares = {5: b"x", 6: b"y"}
    assert RoundSecrets.from_record(secrets.to_record()) == secrets


def test_stages_out_of_order_or_from_another_round_are_refused() -> None:
    contexts = {n: context(n) for n in NODES}
    keys = keys_up(contexts)
    with pytest.raises(StageOrderError, match="round 2"):
        stages.share_keys(share_request(keys, server_round=2), contexts[101])
    with pytest.raises(StageOrderError):
        stages.unmask(ConfigRecord({wire.ROUND: 1, wire.ACTIVE: NODES}), contexts[101])
    with pytest.raises(StageOrderError, match="no set-up"):
        stages.share_keys(share_request(keys), context(104))


def test_share_keys_refuses_substituted_or_repeated_keys_and_small_groups() -> None:
    contexts = {n: context(n) for n in NODES}
    keys = keys_up(contexts)
    swapped = share_request(keys)
    swapped[wire.PK1_LIST] = [keys[102][wire.PK1], keys[101][wire.PK1], keys[103][wire.PK1]]
    with pytest.raises(ValueError, match="other public keys for this node"):
        stages.share_keys(swapped, contexts[101])
    repeated = share_request(keys)
    repeated[wire.PK2_LIST] = [keys[101][wire.PK2]] * 3
    with pytest.raises(ValueError, match="identical"):
        stages.share_keys(repeated, contexts[101])
    small = ConfigRecord({wire.ROUND: 1, wire.NODES: [101], wire.PK1_LIST: [keys[101][wire.PK1]],
                          wire.PK2_LIST: [keys[101][wire.PK2]]})
    with pytest.raises(ValueError, match="1 neighbours < threshold 2"):
        stages.share_keys(small, contexts[101])


def test_collect_masks_and_sends_no_payload_and_skips_undecryptable_shares() -> None:
    contexts = {n: context(n) for n in NODES}
    replies = shared(contexts)
    srcs, cts = forwarded(replies, 101)
    cts[0] = cts[0][:30] + b"!" + cts[0][31:]  # the share from srcs[0] is garbled in transit
    reply = collect(collect_message(101, srcs, cts), contexts[101], trained)
    assert set(reply.content) == {wire.VECTOR, wire.SECAGG}  # no arrays, metrics or report
    assert list(reply.content[wire.SECAGG][wire.MASKED_WITH]) == srcs[1:]
    vector = reply.content[wire.VECTOR][wire.MASKED].numpy()
    assert vector.dtype == np.uint8 and vector.shape == (1 + 4 + 1, 3)  # 24-bit ring: 3 bytes an entry
    assert RoundSecrets.from_record(contexts[101].state[STATE_KEY]).stage == wire.COLLECT


def test_a_failed_training_reply_passes_through_and_the_secrets_are_forgotten() -> None:
    contexts = {n: context(n) for n in NODES}
    replies = shared(contexts)

    def fails(msg: Message, ctx: Context) -> Message:
        return Message(Error(code=4030, reason="budget exhausted"), reply_to=msg)

    reply = collect(collect_message(102, *forwarded(replies, 102)), contexts[102], fails)
    assert reply.has_error() and reply.error.code == 4030
    assert STATE_KEY not in contexts[102].state


def test_unmask_never_reveals_both_secrets_of_a_node_and_forgets_the_round() -> None:
    contexts = {n: context(n) for n in NODES}
    replies = shared(contexts)
    for n in NODES:
        collect(collect_message(n, *forwarded(replies, n)), contexts[n], trained)
    ctx = contexts[101]
    with pytest.raises(ValueError, match="both active and dropped"):
        stages.unmask(ConfigRecord({wire.ROUND: 1, wire.ACTIVE: [101, 102], wire.DEAD: [102, 103]}), ctx)
    with pytest.raises(ValueError, match="lists this node as dropped"):
        stages.unmask(ConfigRecord({wire.ROUND: 1, wire.ACTIVE: [102, 103], wire.DEAD: [101]}), ctx)
    with pytest.raises(ValueError, match="1 surviving neighbours < threshold 2"):
        stages.unmask(ConfigRecord({wire.ROUND: 1, wire.ACTIVE: [101], wire.DEAD: [102, 103]}), ctx)
    out = stages.unmask(ConfigRecord({wire.ROUND: 1, wire.ACTIVE: [101, 102], wire.DEAD: [103]}), ctx)
    assert list(out[wire.SEED_SHARE_NODES]) == [101, 102] and list(out[wire.KEY_SHARE_NODES]) == [103]
    assert STATE_KEY not in ctx.state  # nothing outlives the round


def test_a_node_that_fails_a_stage_forgets_the_round() -> None:
    def raises(msg: Message, ctx: Context) -> Message:
        raise RuntimeError("training crashed")

    contexts = {n: context(n) for n in NODES}
    replies = shared(contexts)
    handler = secagg_handlers(raises)[wire.COLLECT]
    with pytest.raises(RuntimeError, match="training crashed"):
        handler(collect_message(103, *forwarded(replies, 103)), contexts[103])
    assert STATE_KEY not in contexts[103].state and STATE_KEY in contexts[101].state
