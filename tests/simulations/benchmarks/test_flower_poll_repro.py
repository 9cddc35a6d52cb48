"""The Flower-only reproduction runs end to end on Flower's Ray simulation (slow: two Ray start-ups)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.benchmarks import flower_poll_repro


@pytest.mark.slow
def test_every_round_gets_every_reply_and_the_table_is_written(tmp_path: Path) -> None:
    out = tmp_path / "repro.json"
    result = flower_poll_repro.main(["--nodes", "4", "12", "--per-round", "3", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert [(c["nodes"], c["per_round"], len(c["round_s"])) for c in result["cells"]] == [(4, 3, 2), (12, 3, 2)]
    assert all(c["steady_round_s"] > 0.05 for c in result["cells"])  # really waited on Flower's 0.1 s dispatcher


def test_the_server_app_refuses_to_report_a_round_with_missing_replies() -> None:
    class Grid:  # every node registered, no reply ever comes back
        def get_node_ids(self) -> list[int]:
            return [1, 2, 3]

        def send_and_receive(self, messages, timeout):  # type: ignore[no-untyped-def]
            return []

    seconds: list[float] = []
    app = flower_poll_repro.make_server_app(3, 2, 1, seconds)
    with pytest.raises(RuntimeError, match="0 replies to 2 queries"):
        app._main(Grid(), None)  # type: ignore[arg-type,attr-defined]
    assert seconds == []
