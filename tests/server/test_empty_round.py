"""A round that aggregates no reply (docs/operations.md §2): the run fails if nothing has trained yet,
and goes on from the previous model once something has."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from client.app import app as client_app
from contract import parse_run_config
from server.app import run
from server.empty_round import NoReplyAggregated, check_round, is_empty
from server.run_folder import read_rounds
from strategies.protocol import DroppedReply
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

SMALL = {**TINY_RUN, "train.local-steps": 2, "eval.max-examples": 16, "run-name": "empty"}


def _row(rnd: int, clients: int, dropped: int = 0, timed_out: int = 0) -> dict[str, int]:
    return {"round": rnd, "clients": clients, "dropped": dropped, "timed_out": timed_out}


def test_the_first_empty_round_fails_with_counts_and_reasons() -> None:
    dropped = [DroppedReply(1, "error reply: boom\nTraceback ...")] * 3 + [DroppedReply(2, "non-finite update")]
    with pytest.raises(NoReplyAggregated) as err:
        check_round(_row(1, 0, dropped=4, timed_out=1), [_row(0, 0)], dropped)
    text = str(err.value)
    assert text.startswith("round 1 aggregated no reply (4 dropped, 1 timed out, reasons: 3x 'error reply: boom'; 1x 'non-finite update')")
    assert "no earlier round of this run trained" in text


def test_an_empty_round_after_a_trained_one_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flwr"):
        check_round(_row(3, 0, timed_out=4), [_row(0, 0), _row(1, 0, dropped=4), _row(2, 3)], [])
    assert "Round 3 aggregated no reply (0 dropped, 4 timed out)" in caplog.text
    with pytest.raises(NoReplyAggregated):  # rows of earlier empty rounds do not count as training
        check_round(_row(2, 0), [_row(0, 0), _row(1, 0)], [])
    check_round(_row(0, 0), [], [])  # round 0 is the initial model: no replies expected
    check_round(_row(1, 1), [_row(0, 0)], [])
    assert [is_empty(r) for r in (_row(0, 0), _row(1, 0), _row(1, 2))] == [False, True, False]


def test_a_run_whose_every_client_fails_fails_at_round_1_not_completed(tmp_path: Path) -> None:
    values = {**SMALL, "faults.fail-fraction": 1.0, "num-server-rounds": 2, "output-dir": str(tmp_path)}
    with pytest.raises(NoReplyAggregated) as err:
        run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values))
    assert str(err.value).startswith(
        "round 1 aggregated no reply (2 dropped, 0 timed out, reasons: 1x 'error reply (code 2): InjectedFailure: "
        "faults.fail-fraction: partition 0 fails round 1'; 1x "
    )
    rows = read_rounds(tmp_path / "empty" / "rounds.jsonl")
    assert [(r["round"], r["clients"], r["dropped"]) for r in rows] == [(0, 0, 0), (1, 0, 2)]  # recorded, then stopped
    assert not (tmp_path / "empty" / "summary.json").exists()  # never reported as a finished run


class SilentRoundGrid(FakeGrid):
    """Every train reply of the second training round is lost (all clients miss the round timeout)."""

    train_rounds = 0
    lost: set[str] = set()

    def push_messages(self, messages):  # noqa: ANN001, ANN201 - Grid API
        messages = list(messages)
        ids = list(super().push_messages(messages))
        if messages and messages[0].metadata.message_type == "train":
            self.train_rounds += 1
            if self.train_rounds == 2:
                self.lost = set(ids)
        return ids

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201 - Grid API
        return [r for r in super().pull_messages(message_ids) if r.metadata.reply_to_message_id not in self.lost]


def test_an_empty_round_after_training_keeps_the_model_and_the_run_completes(tmp_path: Path) -> None:
    values = {**SMALL, "num-server-rounds": 2, "round-timeout": 0.5, "output-dir": str(tmp_path)}
    run(SilentRoundGrid(client_app, 2, run_config=values), parse_run_config(values))
    rows = read_rounds(tmp_path / "empty" / "rounds.jsonl")
    assert [(r["clients"], r["timed_out"]) for r in rows[1:]] == [(2, 0), (0, 2)]
    assert rows[2]["eval_loss"] == rows[1]["eval_loss"]  # round 2 left the global model as round 1 made it
    summary = json.loads((tmp_path / "empty" / "summary.json").read_text())
    assert summary["rounds_without_replies"] == 1 and summary["timed_out"] == 2
