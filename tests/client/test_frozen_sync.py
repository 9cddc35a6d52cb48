"""The node's side of the frozen factors: refuse factors that do not match the hash, report lost ones."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from adapters.frozen import hash_arrays
from client.frozen_sync import FrozenFactorsMissing, sync_frozen
from client.node_state import NodeStateMissing
from contract import CONFIG, FROZEN_FACTORS, FROZEN_HASH

FACTORS = {"A": np.arange(4, dtype=np.float32).reshape(2, 2)}


def _content(expected_hash: str, factors: dict[str, np.ndarray] | None) -> RecordDict:
    content = RecordDict({CONFIG: ConfigRecord({FROZEN_HASH: expected_hash})})
    if factors is not None:
        content[FROZEN_FACTORS] = ArrayRecord({k: Array(v) for k, v in factors.items()})
    return content


def _context() -> Context:
    return Context(run_id=1, node_id=100, node_config={}, state=RecordDict(), run_config={})


def test_factors_that_do_not_match_the_servers_hash_are_refused_and_not_kept() -> None:
    worker: Any = SimpleNamespace(frozen_hash=None, model=None)
    tampered = {"A": FACTORS["A"] + 1}
    context = _context()
    with pytest.raises(ValueError, match="do not match the hash"):
        sync_frozen(worker, _content(hash_arrays(FACTORS), tampered), context)
    assert worker.frozen_hash is None and not context.state.array_records


def test_a_node_without_factors_reports_them_missing_so_the_server_resends_them() -> None:
    worker: Any = SimpleNamespace(frozen_hash=None, model=None)
    with pytest.raises(FrozenFactorsMissing) as caught:
        sync_frozen(worker, _content(hash_arrays(FACTORS), None), _context())
    assert isinstance(caught.value, NodeStateMissing)  # the ClientApp replies NODE_STATE_MISSING
