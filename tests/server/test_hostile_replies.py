"""Untrusted replies end to end: the real ServerApp, honest nodes running the real ClientApp, and
hostile nodes sending every kind of bad reply and report we know of (``docs/trust.md §6``).

Each federation has 2 honest nodes and one hostile node per case. Its run must complete, every bad
reply must be dropped for the rule it breaks (or, for a bad plugin report, only the report
skipped), and the run must equal, exactly, the baseline run on the same federation in which every
hostile node sends nothing usable (final global arrays, the strategy's state, central evaluation,
losses, counts). Honest replies are replayed from the baseline (``tests.server.hostile``): a hostile
run that sent the honest nodes anything the baseline did not is a failure by itself.

The default suite runs each table in one federation (one run for all its cases); ``-m exhaustive``
runs every case in a federation of its own.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from contract import ARRAYS, METRICS, parse_run_config
from contract.reply_schema import DEFAULT_MAX_UPDATE_NORM
from server.app import run
from server.checkpoint import Checkpoint
from server.run_folder import read_rounds
from tests.server.hostile import (
    Case,
    Federation,
    ReplyCache,
    error_reply,
    first_array,
    lying_npy,
    records,
    report,
    with_metrics,
)
from strategies.validation import update_norm
from tests.strategies.fake_grid import FakeGrid

HONEST = 2
FIRST_NODE = 100  # FakeGrid's node ids: FIRST_NODE + partition

FEDEX = {
    "strategy.name": "fedex", "model.name": "tiny-llama", "task.name": "arithmetic", "num-server-rounds": 2,
    "train.local-steps": 2, "train.batch-size": 8, "adapter.rank": 4, "data.partitioner": "iid",
    "eval.max-examples": 4, "fraction-evaluate": 1.0,
}
GUIDEQ = {
    "strategy.name": "fedit", "model.name": "minilm-l6", "task.name": "guideq", "task.max-length": 64,
    "num-server-rounds": 2, "train.local-steps": 1, "train.batch-size": 8, "adapter.rank": 4,
    "data.partitioner": "iid", "eval.central": False, "guideq.num-train": 96, "guideq.num-test": 16,
    "guideq.explain-examples": 2,
}
FEDSB = {
    "strategy.name": "fedsb", "model.name": "tiny-llama", "task.name": "arithmetic", "num-server-rounds": 1,
    "train.local-steps": 2, "train.batch-size": 8, "adapter.rank": 4, "adapter.init": "federated",
    "adapter.init-examples": 8, "data.partitioner": "iid", "eval.max-examples": 8,
}


def _evaluate_only(name: str, code: str, tamper: Any) -> Case:
    """A node whose train replies fail (as in the baseline) and whose evaluate reply is bad."""
    return Case(name, code, train=error_reply, evaluate=tamper)


def _array_record(msg: Any, content: RecordDict) -> RecordDict:
    content["junk"] = ArrayRecord({"x": Array(np.zeros(4, np.float32))})
    return content


def _rename_metrics(content: RecordDict) -> None:
    content["stats"] = content.pop(METRICS)


def _metrics_as_config(content: RecordDict) -> None:
    content[METRICS] = ConfigRecord(dict(content[METRICS]))


def _report_as_arrays(content: RecordDict) -> None:
    content["report"] = ArrayRecord({"x": Array(np.zeros(2, np.float32))})


def _drop_arrays(content: RecordDict) -> None:
    del content[ARRAYS]


def _extra_array(content: RecordDict) -> None:
    content[ARRAYS]["extra"] = Array(np.zeros(3, np.float32))


def _missing_array(content: RecordDict) -> None:
    del content[ARRAYS][next(iter(content[ARRAYS]))]


def _torch_stype(array: np.ndarray) -> Array:
    return Array(dtype=str(array.dtype), shape=tuple(array.shape), stype="torch.Tensor", data=array.tobytes())


def _truncated(array: np.ndarray) -> Array:
    whole = Array(array)
    return Array(dtype=whole.dtype, shape=whole.shape, stype=whole.stype, data=whole.data[:-4])


REPLY_CASES = [  # fedex on tiny-llama: replies the strategy must drop, and the rule each breaks
    # crashes from one reply (issue 16, "What is broken")
    Case("partition-id NaN", "metric-non-finite", train=with_metrics(partition_id=math.nan)),
    Case("partition-id inf", "metric-non-finite", train=with_metrics(partition_id=math.inf)),
    Case("partition-id list", "metric-list", train=with_metrics(partition_id=[0, 1])),
    Case("partition-id negative", "metric-range", train=with_metrics(partition_id=-1)),
    Case("partition-id fractional", "metric-type", train=with_metrics(partition_id=2.5)),
    Case("train_loss list", "metric-list", train=with_metrics(train__loss=[1.0, 2.0])),
    Case("train_loss NaN", "metric-non-finite", train=with_metrics(train__loss=math.nan)),
    Case("frozen-hash-ok list (scalar/list mismatch)", "metric-list", train=with_metrics(frozen_hash_ok=[1, 1])),
    Case("base-version 999", "protocol", train=with_metrics(base_version=999)),
    Case("base-version -5", "metric-range", train=with_metrics(base_version=-5)),
    # clients rewriting the server's rows
    Case("sets `round`", "metric-undeclared", train=with_metrics(round=99)),
    Case("sets `bytes_up`", "metric-undeclared", train=with_metrics(bytes__up=0)),
    Case("sets `eval_accuracy`", "metric-undeclared", train=with_metrics(eval__accuracy=1.0)),
    Case("sets `epsilon` without DP", "metric-undeclared", train=with_metrics(epsilon=0.1)),
    Case("sets `dropped`", "metric-undeclared", train=with_metrics(dropped=-5)),
    Case("10k-character metric name", "metric-undeclared", train=with_metrics(**{"x" * 10_000: 1.0})),
    # weights
    Case("num-examples 2^62", "num-examples-cap", train=with_metrics(num_examples=2**62)),
    Case("num-examples 1e300", "num-examples-cap", train=with_metrics(num_examples=1e300)),
    Case("num-examples 0", "metric-range", train=with_metrics(num_examples=0)),
    Case("num-examples missing", "num-examples-missing", train=with_metrics(num_examples=None)),
    Case("num-examples NaN", "metric-non-finite", train=with_metrics(num_examples=math.nan)),
    # huge values and arrays
    Case("update 3e38 (finite, overflows sums)", "update-norm", train=first_array(lambda a: np.full_like(a, 3e38))),
    Case("update norm 1e7", "update-norm", train=first_array(lambda a: a + np.float32(1e7 / math.sqrt(a.size)))),
    Case("update NaN", "array-non-finite", train=first_array(lambda a: np.full_like(a, np.nan))),
    Case("update inf", "array-non-finite", train=first_array(lambda a: np.full_like(a, np.inf))),
    Case("npy header claims 10^12 elements", "array-header", train=first_array(lying_npy((10**12,)))),
    Case("npy bytes truncated", "array-header", train=first_array(_truncated)),
    Case("array of another shape", "array-header", train=first_array(lambda a: np.zeros((a.shape[0] + 1, *a.shape[1:]), a.dtype))),
    Case("array as float64", "array-header", train=first_array(lambda a: a.astype(np.float64))),
    Case("array as torch stype", "array-header", train=first_array(_torch_stype)),
    Case("array missing", "array-keys", train=records(_missing_array)),
    Case("extra array", "array-keys", train=records(_extra_array)),
    # records
    Case("MetricRecord under another name", "records", train=records(_rename_metrics)),
    Case("metrics as a ConfigRecord", "records", train=records(_metrics_as_config)),
    Case("extra ArrayRecord", "records", train=_array_record),
    Case("report as an ArrayRecord", "records", train=records(_report_as_arrays)),
    Case("no arrays record", "records", train=records(_drop_arrays)),
    # federated evaluation replies
    _evaluate_only("eval metric inf", "metric-non-finite", with_metrics(eval__loss=math.inf)),
    _evaluate_only("eval metric list", "metric-list", with_metrics(eval__loss=[1.0, 2.0])),
    _evaluate_only("evaluate sets `round`", "metric-undeclared", with_metrics(round=3)),
    _evaluate_only("evaluate num-examples 2^62", "num-examples-cap", with_metrics(num_examples=2**62)),
    _evaluate_only("evaluate reply with arrays", "records", _array_record),
]

_deep = "[" * 100_000 + "]" * 100_000
_lexicon = {"lexicon": {"0": [["good", 0.5, 2]]}, "explained": 1, "examined": 2}


def _with(**changes: Any) -> str:
    return json.dumps({**_lexicon, **changes})


REPORT_CASES = [  # GUIDEQ: replies kept, reports skipped (counted in plugin_bad_reports)
    Case("report nested 100k deep", None, train=report(json.dumps({"lexicon": {}})[:-1] + ', "x": ' + _deep + "}")),
    Case("lexicon label maps to a dict", None, train=report(_with(lexicon={"0": {"good": 1}}))),
    Case("lexicon entry of two items", None, train=report(_with(lexicon={"0": [["good", 0.5]]}))),
    Case("lexicon weight a string", None, train=report(_with(lexicon={"0": [["good", "0.5", 2]]}))),
    Case("`explained` = 'abc'", None, train=report(_with(explained="abc"))),
    Case("weight NaN", None, train=report(_with().replace("0.5", "NaN"))),
    Case("weight 1e309 (inf)", None, train=report(_with().replace("0.5", "1e309"))),
    Case("weight 1e300", None, train=report(_with().replace("0.5", "1e300"))),
    Case("report is a list", None, train=report("[1, 2]")),
    Case("report not JSON", None, train=report("{lexicon:")),
    Case("report ConfigRecord without json", None, train=report(record=ConfigRecord({"text": "x"}))),
    Case("report over 4 MB", None, train=report(_with(pad="x" * 4_100_000))),
    Case("report with an unknown field", None, train=report(_with(extra=1))),
]

GRADIENT_CASES = [  # Fed-SB's federated init: gradient estimates the server must leave out
    Case("gradient NaN", "array-non-finite", train=error_reply, gradient=first_array(lambda a: np.full_like(a, np.nan))),
    Case("gradient of another shape", "array-header", train=error_reply, gradient=first_array(lambda a: a[:-1])),
    Case("gradient npy header lies", "array-header", train=error_reply, gradient=first_array(lying_npy((10**12,)))),
    Case("gradient module missing", "array-keys", train=error_reply, gradient=records(_missing_array)),
    Case("gradient num-examples missing", "num-examples-missing", train=error_reply, gradient=with_metrics(num_examples=None)),
    Case("gradient num-examples above init-examples", "metric-range", train=error_reply, gradient=with_metrics(num_examples=10**6)),
]

BASELINE_CASE = Case("baseline: nothing usable", "error-reply", train=error_reply, evaluate=error_reply, gradient=error_reply)

_DROP = re.compile(r"dropping (?:reply from node|node) (\d+)'?s? ?(?:gradient estimate )?\((\S+)\)")


def _federation(values: dict[str, Any], cases: list[Case], cache: ReplyCache, folder: Path, name: str,
                caplog: pytest.LogCaptureFixture) -> tuple[Path, Federation, dict[int, set[str]]]:
    nodes = HONEST + len(cases)
    hostile = {FIRST_NODE + HONEST + i: case for i, case in enumerate(cases)}
    handler = Federation(cache, hostile, {node: node - FIRST_NODE for node in hostile})
    config = {**values, "output-dir": str(folder), "run-name": name}
    grid = FakeGrid(handler, nodes, run_config=config, first_node_id=FIRST_NODE)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        path = run(grid, parse_run_config(config)).path
    for instruction, reply in grid.log:  # the default update-norm bound is generous for every honest update
        if instruction.metadata.message_type == "train" and instruction.metadata.dst_node_id not in hostile and reply.has_content():
            sent = {k: a.numpy() for k, a in instruction.content[ARRAYS].items()}
            got = {k: a.numpy() for k, a in reply.content[ARRAYS].items()}
            assert update_norm(got, sent) < DEFAULT_MAX_UPDATE_NORM / 1000
    drops: dict[int, set[str]] = {}
    for record in caplog.records:
        match = _DROP.search(record.getMessage())
        if match:
            drops.setdefault(int(match.group(1)), set()).add(match.group(2))
    return path, handler, drops


_NOT_COMPARED = re.compile(r"^(bytes_.*|wall_s|dropped(_evaluate)?/.*|plugin_bad_reports)$")


def _same_run(path: Path, baseline: Path) -> None:
    rows, want = read_rounds(path / "rounds.jsonl"), read_rounds(baseline / "rounds.jsonl")
    assert len(rows) == len(want)
    for row, expected in zip(rows, want, strict=True):
        mine = {k: v for k, v in row.items() if not _NOT_COMPARED.match(k)}
        theirs = {k: v for k, v in expected.items() if not _NOT_COMPARED.match(k)}
        assert mine == theirs
    got, ref = Checkpoint.load(path), Checkpoint.load(baseline)
    for name in ("global_arrays", "strategy_arrays", "frozen"):
        mine_arrays, theirs_arrays = getattr(got, name), getattr(ref, name)
        assert sorted(mine_arrays) == sorted(theirs_arrays)
        for key in mine_arrays:
            assert np.array_equal(mine_arrays[key], theirs_arrays[key]), (name, key)
    assert got.broadcast == ref.broadcast


def _check_table(values: dict[str, Any], cases: list[Case], tmp_path: Path, caplog: pytest.LogCaptureFixture,
                 *, baseline_case: Case = BASELINE_CASE) -> tuple[Path, dict[int, set[str]]]:
    cache: ReplyCache = {}
    baseline, _, _ = _federation(values, [baseline_case] * len(cases), cache, tmp_path, "baseline", caplog)
    path, handler, drops = _federation(values, cases, cache, tmp_path, "hostile", caplog)
    assert handler.misses == [], "the honest nodes were sent something the baseline never sent them"
    _same_run(path, baseline)
    return path, drops


def _summary(path: Path) -> dict[str, Any]:
    return json.loads((path / "summary.json").read_text())


def _check_drops(cases: list[Case], drops: dict[int, set[str]], path: Path, rounds: int) -> None:
    summary = _summary(path)
    expected_codes: dict[str, int] = {}
    for i, case in enumerate(cases):
        node = FIRST_NODE + HONEST + i
        assert case.code in drops.get(node, set()), (case.name, drops.get(node))
        train_code = "error-reply" if case.train is error_reply else case.code
        expected_codes[train_code] = expected_codes.get(train_code, 0) + rounds
    assert summary["dropped"] == {"total": len(cases) * rounds, "by_reason": dict(sorted(expected_codes.items()))}
    evaluate_codes: dict[str, int] = {}  # an evaluate-only case breaks its rule there; the others send error replies
    for case in cases:
        code = case.code if case.train is error_reply else "error-reply"
        evaluate_codes[code] = evaluate_codes.get(code, 0) + rounds
    assert summary["dropped_evaluate"] == {"total": len(cases) * rounds, "by_reason": dict(sorted(evaluate_codes.items()))}
    rows = read_rounds(path / "rounds.jsonl")
    assert all(r["clients"] == HONEST and r["dropped"] == len(cases) for r in rows[1:])


def test_every_bad_reply_is_dropped_for_its_rule_and_the_run_equals_the_honest_only_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, drops = _check_table(FEDEX, REPLY_CASES, tmp_path, caplog)
    _check_drops(REPLY_CASES, drops, path, rounds=2)
    rows = read_rounds(path / "rounds.jsonl")
    assert all("epsilon" not in r and r["round"] == i for i, r in enumerate(rows))
    evaluate_cases = sum(case.train is error_reply for case in REPLY_CASES)
    assert all(r["fed_clients"] == HONEST and r["fed_dropped"] == len(REPLY_CASES) for r in rows[1:])
    assert evaluate_cases >= 5


def test_every_bad_report_is_skipped_and_only_the_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plain = Case("well-formed reply, no report", None)
    path, _ = _check_table(GUIDEQ, REPORT_CASES, tmp_path, caplog, baseline_case=plain)
    rows = read_rounds(path / "rounds.jsonl")
    for row in rows[1:]:
        assert row["clients"] == HONEST + len(REPORT_CASES) and row["dropped"] == 0  # the replies are kept
        assert row["plugin_bad_reports"] == len(REPORT_CASES) and row["guideq_reports"] == HONEST
    assert _summary(path)["dropped"] == {"total": 0, "by_reason": {}}


def test_bad_gradient_estimates_are_left_out_of_the_federated_init(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, drops = _check_table(FEDSB, GRADIENT_CASES, tmp_path, caplog)
    for i, case in enumerate(GRADIENT_CASES):
        assert case.code in drops.get(FIRST_NODE + HONEST + i, set()), (case.name, drops)


def test_the_suite_covers_at_least_thirty_kinds() -> None:
    names = [c.name for c in REPLY_CASES + REPORT_CASES + GRADIENT_CASES]
    assert len(names) == len(set(names)) and len(names) >= 30


@pytest.mark.exhaustive
@pytest.mark.parametrize("case", REPLY_CASES, ids=lambda c: c.name)
def test_each_bad_reply_alone(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, drops = _check_table(FEDEX, [case], tmp_path, caplog)
    _check_drops([case], drops, path, rounds=2)


@pytest.mark.exhaustive
@pytest.mark.parametrize("case", REPORT_CASES, ids=lambda c: c.name)
def test_each_bad_report_alone(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = _check_table(GUIDEQ, [case], tmp_path, caplog, baseline_case=Case("plain", None))
    assert all(r["plugin_bad_reports"] == 1 for r in read_rounds(path / "rounds.jsonl")[1:])
