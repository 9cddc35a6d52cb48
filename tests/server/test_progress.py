"""ProgressGrid: Flower's push-then-poll loop with a progress line, no reply lost or duplicated."""

from __future__ import annotations

import io

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from server.progress import ProgressGrid
from tests.strategies.fake_grid import FakeGrid


def _echo(msg: Message, context: Context) -> Message:
    return Message(content=RecordDict({"metrics": MetricRecord({"p": int(context.node_config["partition-id"])})}), reply_to=msg)


def _messages(grid: ProgressGrid, rnd: int) -> list[Message]:
    return [
        grid.create_message(RecordDict({"config": ConfigRecord({"server-round": rnd})}), "train", node, "g")
        for node in grid.get_node_ids()
    ]


def test_every_reply_comes_back_once_and_each_phase_reports_its_count() -> None:
    stream = io.StringIO()
    grid = ProgressGrid(FakeGrid(_echo, 4), num_rounds=2, status=lambda: "1.00 MB so far", stream=stream)
    replies = list(grid.send_and_receive(_messages(grid, 1), timeout=10))
    assert sorted(int(r.content["metrics"]["p"]) for r in replies) == [0, 1, 2, 3]
    assert stream.getvalue().splitlines() == ["round 1 train: 4/4 clients replied, 1.00 MB so far"]


def test_the_timeout_returns_what_arrived() -> None:
    class Silent(FakeGrid):
        def pull_messages(self, message_ids):  # noqa: ANN001, ANN201 - Grid API
            return [r for r in super().pull_messages(message_ids) if int(r.content["metrics"]["p"]) != 0]

    grid = ProgressGrid(Silent(_echo, 3), num_rounds=1, status=lambda: "", stream=io.StringIO())
    replies = list(grid.send_and_receive(_messages(grid, 1), timeout=0.5))
    assert sorted(int(r.content["metrics"]["p"]) for r in replies) == [1, 2]
