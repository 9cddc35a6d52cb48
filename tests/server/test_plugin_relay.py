"""The task-plugin hooks end to end on an in-process grid (real ServerApp, real ClientApp).

A probe task (arithmetic on tiny-llama) reports each client's update norm and the broadcast it saw,
the server merges the reports and broadcasts a counter; the test checks every hook fired where the
contract says, that reports and broadcasts are metered, and that a broken report loses nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

from client.app import app as client_app
from client.tasks import register_task
from client.tasks.arithmetic import ArithmeticWordProblems
from client.tasks.base import AdapterUpdate, ClientReport, ReportMerge, Task
from flwr.app import Array, ArrayRecord, ConfigRecord
from pydantic import BaseModel, ConfigDict, Field

from server.app import run
from server.plugin_relay import PluginRelay
from strategies.fedit import FedIT
from tests.strategies.helpers import make_reply
from server.run_folder import read_rounds
from contract import BROADCAST, REPORT, message_bytes, parse_run_config
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid


@register_task
class HookProbe(ArithmeticWordProblems):
    """Arithmetic with every optional hook implemented in the simplest checkable way."""

    name = "hook-probe"
    server_seen: list[dict[str, Any]] = []  # broadcasts the server's task received
    freeze_updates = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state: dict[str, Any] | None = None

    def apply_broadcast(self, state: dict[str, Any]) -> None:
        self.state = state

    def transform_update(self, model: Any, update: AdapterUpdate) -> dict[str, np.ndarray] | None:
        return dict(update.before) if type(self).freeze_updates else None

    def client_report(self, model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, update: AdapterUpdate) -> dict[str, Any]:
        norm = float(np.sqrt(sum(float(np.sum((update.after[k] - update.before[k]) ** 2)) for k in update.after)))
        modules = sorted(update.layout)
        return {"norm": norm, "rows": len(rows), "seen": self.state, "modules": len(modules)}

    def merge_reports(self, server_round: int, reports: list[ClientReport], *, sent: dict[str, np.ndarray]) -> ReportMerge:
        norms = [r.report["norm"] for r in reports if r.report]
        # the server's own view of each update must agree with what the client measured
        server_norms = [
            float(np.sqrt(sum(float(np.sum((r.arrays[k] - sent[k]) ** 2)) for k in sent)))
            for r in reports
            if r.report
        ]
        broadcast = {"round": server_round, "clients": len(norms)}
        type(self).server_seen.append(broadcast)
        return ReportMerge(
            broadcast=broadcast,
            metrics={"probe_norm_mean": float(np.mean(norms)) if norms else 0.0, "probe_reports": float(len(norms))},
            detail={"client_norms": norms, "server_norms": server_norms, "seen": [r.report["seen"] for r in reports if r.report]},
        )

    def shard_metrics(self, model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, batch_size: int) -> dict[str, float]:
        return {"probe_shard_rows": float(len(rows))}


def _run(tmp_path: Path, **extra: Any) -> tuple[FakeGrid, Path]:
    values = {**TINY_RUN, "task.name": "hook-probe", "output-dir": str(tmp_path), "fraction-evaluate": 1.0,
              "num-server-rounds": 2, "train.local-steps": 2,
              "eval.max-examples": 16, **extra}
    grid = FakeGrid(client_app, 3, run_config=values)
    return grid, run(grid, parse_run_config(values)).path


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeGrid, Path]:
    HookProbe.freeze_updates = False
    return _run(tmp_path_factory.mktemp("probe"))


def test_reports_reach_the_server_and_metrics_land_in_rounds_jsonl(probe_run: tuple[FakeGrid, Path]) -> None:
    _, path = probe_run
    rows = read_rounds(path / "rounds.jsonl")
    for row in rows[1:]:
        assert row["probe_reports"] == 3.0 and row["probe_norm_mean"] > 0
        assert row["fed_eval_probe_shard_rows"] > 0  # shard metrics from federated evaluation
    for rnd in (1, 2):
        detail = json.loads((path / "plugins" / f"round-{rnd:03d}.json").read_text())
        np.testing.assert_allclose(detail["client_norms"], detail["server_norms"], rtol=1e-6)


def test_the_broadcast_of_round_n_reaches_every_client_in_round_n_plus_1(probe_run: tuple[FakeGrid, Path]) -> None:
    grid, path = probe_run
    assert json.loads((path / "plugins" / "round-001.json").read_text())["seen"] == [None] * 3
    for rnd in (2,):
        seen = json.loads((path / "plugins" / f"round-{rnd:03d}.json").read_text())["seen"]
        assert seen == [{"round": rnd - 1, "clients": 3}] * 3
    train_down = [m for m, _ in grid.log if m.metadata.message_type == "train"]
    assert BROADCAST not in train_down[0].content and all(BROADCAST in m.content for m in train_down[3:])
    assert len(train_down) == 6


def test_reports_and_broadcasts_are_metered(probe_run: tuple[FakeGrid, Path]) -> None:
    grid, path = probe_run
    rows = read_rounds(path / "rounds.jsonl")
    up = sum(message_bytes(reply) for instruction, reply in grid.log if int(instruction.content["config"]["server-round"]) == 2)
    down = sum(message_bytes(instruction) for instruction, _ in grid.log if int(instruction.content["config"]["server-round"]) == 2)
    assert rows[2]["bytes_up"] == up and rows[2]["bytes_down"] == down
    report_bytes = sum(reply.content[REPORT].count_bytes() for instruction, reply in grid.log if REPORT in reply.content)
    assert report_bytes > 0


def test_transform_update_replaces_the_payload_sent(tmp_path: Path) -> None:
    HookProbe.freeze_updates = True
    try:
        grid, path = _run(tmp_path, **{"num-server-rounds": 1})
    finally:
        HookProbe.freeze_updates = False
    (instruction, _), *_ = [(m, r) for m, r in grid.log if m.metadata.message_type == "train"]
    for _, reply in [(m, r) for m, r in grid.log if m.metadata.message_type == "train"]:
        for key, array in reply.content["arrays"].items():
            np.testing.assert_array_equal(array.numpy(), instruction.content["arrays"][key].numpy())
    detail = json.loads((path / "plugins" / "round-001.json").read_text())
    assert all(n > 0 for n in detail["client_norms"])  # the report still saw the real update
    assert detail["server_norms"] == [0.0] * 3  # but what travelled was the transformed one


def test_an_unreadable_report_is_skipped_and_the_update_still_counts(tmp_path: Path) -> None:
    def corrupt(msg, context):  # noqa: ANN001, ANN202 - a FakeGrid handler
        reply = client_app(msg, context)
        if msg.metadata.message_type == "train" and context.node_config["partition-id"] == 0:
            reply.content[REPORT]["json"] = "{not json"
        return reply

    values = {**TINY_RUN, "task.name": "hook-probe", "output-dir": str(tmp_path), "num-server-rounds": 1,
              "train.local-steps": 2, "eval.max-examples": 16}
    path = run(FakeGrid(corrupt, 3, run_config=values), parse_run_config(values)).path
    row = read_rounds(path / "rounds.jsonl")[1]
    assert row["clients"] == 3 and row["dropped"] == 0
    assert row["probe_reports"] == 2.0 and row["plugin_bad_reports"] == 1.0


# --- untrusted reports, one relay in isolation (docs/trust.md §5) ---------------------------------------


class _ProbeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _MergeProbe(Task):
    """A server-side task whose merge breaks in the ways a report can make it break."""

    name = "merge-probe"
    model_kind = "causal-lm"
    report_schema = _ProbeReport

    def build_datasets(self) -> Any:
        raise NotImplementedError("server-side merge probe: no data")

    def collate(self, tokenizer: Any, rows: list[dict[str, Any]]) -> Any:
        raise NotImplementedError("server-side merge probe: no data")

    def example_losses(self, model: Any, batch: Any) -> Any:
        raise NotImplementedError("server-side merge probe: no data")

    def evaluate(self, model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, batch_size: int) -> Any:
        raise NotImplementedError("server-side merge probe: no data")

    def merge_reports(self, server_round: int, reports: list[ClientReport], *, sent: dict[str, np.ndarray]) -> ReportMerge:
        values = [r.report["value"] for r in reports if r.report]
        if 13.0 in values and len(values) > 1:
            raise ValueError("13 does not merge with others")  # a report that breaks only in company
        scale = 1e308 if 7.0 in values else 1.0  # 7 makes the broadcast overflow to inf
        total = sum(values) * scale * 10
        return ReportMerge(broadcast={"total": total}, metrics={"reports": float(len(values)), "total": total},
                           detail={"values": values})


def _relay_round(tmp_path: Path, reports: list[str | None]) -> PluginRelay:
    g = {"w": np.zeros((2, 2), np.float32)}
    relay = PluginRelay(FedIT(), _MergeProbe(seed=0, max_length=8), tmp_path)
    list(relay.configure_train(1, ArrayRecord({"w": Array(g["w"])}), ConfigRecord(), FakeGrid(client_app, 2)))
    replies = []
    for i, text in enumerate(reports):
        reply = make_reply({"w": np.full((2, 2), float(i), np.float32)}, 10, node_id=100 + i)
        if text is not None:
            reply.content[REPORT] = ConfigRecord({"json": text})
        replies.append(reply)
    relay.aggregate_train(1, replies)
    return relay


def test_reports_that_break_the_merge_are_skipped_one_by_one_and_the_rest_merge(tmp_path: Path) -> None:
    relay = _relay_round(tmp_path, ['{"value": 1.0}', '{"value": 13.0}', '{"value": 7.0}', '{"value": 2.0}',
                                    '{"value": "abc"}', '[' * 50_000, '{"value": NaN}', None])
    assert relay.round_metrics[1] == {"reports": 2.0, "total": 30.0, "plugin_bad_reports": 5.0}
    assert relay.broadcast == {"total": 30.0} and relay.dropped_by_reason(1) == {}
    assert json.loads((tmp_path / "plugins" / "round-001.json").read_text()) == {"values": [1.0, 2.0]}


def test_a_merge_that_fails_on_its_own_keeps_the_run_and_the_previous_broadcast(tmp_path: Path) -> None:
    relay = _relay_round(tmp_path, ['{"value": 7.0}'])
    assert relay.round_metrics[1] == {"plugin_bad_reports": 1.0, "reports": 0.0, "total": 0.0}
    relay = _relay_round(tmp_path, [])
    assert relay.broadcast == {"total": 0.0}
