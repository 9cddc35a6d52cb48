"""The SecAgg+ driver against real client handlers (FakeGrid): correct sums, dropouts, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from contract import ARRAYS, METRICS
from contract import secagg as wire
from contract.secagg import SecAggConfig
from server.secagg import RoundDropped, SecAggSum
from tests.server.secagg.federation import Federation


def assert_sum_matches(outcome: object, fed: Federation, partitions: list[int], *, weighted: bool = True) -> None:
    assert isinstance(outcome, SecAggSum), outcome
    weight, sums, loss = fed.plain_sums(partitions, weighted=weighted)
    assert outcome.weight == weight
    assert outcome.survivors == tuple(sorted(fed.node(p) for p in partitions))
    bound = outcome.weight * outcome.error_bound
    for key, expected in sums.items():
        assert outcome.weighted_sums[key].shape == expected.shape
        assert np.max(np.abs(outcome.weighted_sums[key] - expected)) < bound
    assert abs(outcome.metric_sums["train_loss"] - loss) < outcome.weight * 2 * wire.METRIC_CLIP / (2**22 - 1)


@pytest.mark.parametrize("weighted", [True, False])
def test_decoded_sum_equals_the_plain_weighted_sum_within_the_bound(weighted: bool) -> None:
    fed = Federation(k=5)
    outcome = fed.run(weighted=weighted)
    assert_sum_matches(outcome, fed, list(range(5)), weighted=weighted)
    assert not outcome.dropped


def test_mean_is_the_weighted_fedavg_of_the_payloads_within_two_c_over_q() -> None:
    fed = Federation(k=4, seed=3)
    config = SecAggConfig(enabled=True, quantization_bits=12)  # coarse, so the bound is not vacuous
    outcome = fed.run(config)
    assert isinstance(outcome, SecAggSum)
    n = np.array([fed.num_examples[p] for p in range(4)], dtype=np.float64)
    for key, glob in fed.global_arrays.items():
        payloads = np.stack([fed.payload(p, fed.global_arrays)[key].astype(np.float64) for p in range(4)])
        fedavg = np.tensordot(n / n.sum(), payloads, axes=1)
        decoded = glob.astype(np.float64) + outcome.mean_update()[key]
        err = np.max(np.abs(decoded - fedavg))
        assert err < 2 * config.clip_range / (2**12 - 1)
        assert err > 0  # 12 bits are visibly lossy: the comparison is not vacuous


def test_no_reply_the_server_receives_holds_a_plaintext_update_or_weight() -> None:
    fed = Federation(k=5)
    outcome = fed.run()
    assert isinstance(outcome, SecAggSum)
    collect = [(ins, rep) for ins, rep in fed.grid.log if ins.metadata.message_type == wire.COLLECT]
    assert len(collect) == 5
    for instruction, reply in fed.grid.log:
        assert ARRAYS not in reply.content and METRICS not in reply.content  # no payload, no num-examples
    m = next(int(i.content[wire.SECAGG][wire.MODULUS_BITS]) for i, _ in fed.grid.log if i.metadata.message_type == wire.SETUP)
    for instruction, reply in collect:
        node = reply.metadata.src_node_id
        partition = fed.grid.node_ids.index(node)
        vector = wire.unpack(reply.content[wire.VECTOR][wire.MASKED].numpy(), m)
        honest_ceiling = fed.num_examples[partition] * (2**22 - 1)  # an unmasked entry is in [0, w·Q]
        assert vector[0] != fed.num_examples[partition]
        assert np.mean(vector <= honest_ceiling) < 0.5  # masked entries are spread over the whole ring
        public = reply.content[wire.PUBLIC]
        assert set(public) == {"frozen-hash-ok"}  # partition-id, num-examples, train_loss stay home


def test_one_client_failing_to_train_is_dropped_and_the_rest_is_summed() -> None:
    fed = Federation(k=5, fail={(2, wire.COLLECT)})
    outcome = fed.run()
    assert_sum_matches(outcome, fed, [0, 1, 3, 4])
    assert [(d.node, d.stage) for d in outcome.dropped] == [(fed.node(2), "collect")]
    assert "injected failure" in outcome.dropped[0].reason


@pytest.mark.parametrize("stage", [wire.SETUP, wire.SHARE_KEYS])
def test_dropout_before_masking_leaves_the_client_out(stage: str) -> None:
    fed = Federation(k=5, fail={(1, stage)})
    assert_sum_matches(fed.run(), fed, [0, 2, 3, 4])


def test_silent_clients_after_masking_are_unmasked_from_their_neighbours_shares() -> None:
    fed = Federation(k=6)
    fed.grid.silent = {(fed.node(0), wire.COLLECT), (fed.node(4), wire.COLLECT)}
    outcome = fed.run()  # threshold 0.6 of 6 -> 4 shares; 4 survivors
    assert_sum_matches(outcome, fed, [1, 2, 3, 5])
    assert {d.reason for d in outcome.dropped} == {"no reply (timeout)"}


def test_a_survivor_silent_at_unmask_still_counts() -> None:
    fed = Federation(k=5)
    fed.grid.silent = {(fed.node(3), wire.UNMASK)}
    assert_sum_matches(fed.run(), fed, [0, 1, 2, 3, 4])


def test_too_few_survivors_drop_the_round_with_the_counts() -> None:
    fed = Federation(k=5, fail={(0, wire.COLLECT), (1, wire.COLLECT), (2, wire.COLLECT)})
    outcome = fed.run()  # t = ceil(0.6 * 5) = 3
    assert isinstance(outcome, RoundDropped)
    assert (outcome.stage, outcome.survivors, outcome.threshold) == ("collect", 2, 3)
    assert str(outcome) == "round 1 dropped at collect: 2 survivors < threshold 3"


def test_count_threshold_and_set_up_dropouts_below_it() -> None:
    fed = Federation(k=4, fail={(0, wire.SETUP), (1, wire.SETUP)})
    outcome = fed.run(SecAggConfig(enabled=True, threshold=3))
    assert isinstance(outcome, RoundDropped)
    assert (outcome.stage, outcome.survivors, outcome.threshold) == ("set-up", 2, 3)


def test_secagg_plus_share_groups_decode_the_same_sum() -> None:
    fed = Federation(k=9, fail={(4, wire.COLLECT)})
    outcome = fed.run(SecAggConfig(enabled=True, num_shares=5, threshold=3))
    assert_sum_matches(outcome, fed, [0, 1, 2, 3, 5, 6, 7, 8])
    setup = [ins for ins, _ in fed.grid.log if ins.metadata.message_type == wire.SHARE_KEYS]
    assert {len(ins.content[wire.SECAGG][wire.NODES]) for ins in setup} == {5}  # groups, not everyone


def test_a_lone_client_is_never_aggregated() -> None:
    fed = Federation(k=1)
    outcome = fed.run()
    assert isinstance(outcome, RoundDropped) and outcome.survivors == 1
    assert fed.grid.log == []  # not even set-up went out


def test_threshold_larger_than_the_group_is_a_config_error() -> None:
    fed = Federation(k=3)
    with pytest.raises(ValueError, match="secagg.threshold"):
        fed.run(SecAggConfig(enabled=True, threshold=5))


def test_the_ledger_books_every_stage_in_its_own_phase() -> None:
    fed = Federation(k=3)
    fed.run()
    phases = {(row.phase, row.direction) for row in fed.ledger.rows}
    for stage in wire.STAGES:
        assert (wire.PHASES[stage], "down") in phases and (wire.PHASES[stage], "up") in phases
    assert ("train", "down") in phases and ("train", "up") not in phases  # arrays only go down in the clear
    for instruction, reply in fed.grid.log:
        booked = sum(r.bytes for r in fed.ledger.rows if r.node == reply.metadata.src_node_id)
        assert booked > 0
    total_messages = sum(sum(rec.count_bytes() for rec in i.content.values()) + sum(rec.count_bytes() for rec in r.content.values())
                         for i, r in fed.grid.log)
    assert fed.ledger.total() == total_messages
