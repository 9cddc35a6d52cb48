"""The prepared run state: a fresh run and a resumed one differ only in the values the loop starts from."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from adapters.frozen import frozen_factors
from adapters.payload import extract
from client.tasks.setup import TaskAndModel, build_task_and_model
from contract import parse_run_config
from server.checkpoint import Checkpoint, CheckpointError
from server.metering import LedgerRow
from server.run_state import RunState, load_checkpoint
from strategies.fedit import FedIT
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

VALUES = {**TINY_RUN, "strategy.name": "ffa", "seed": 5}


@pytest.fixture(scope="module")
def built() -> TaskAndModel:
    return build_task_and_model(parse_run_config(VALUES), "ffa")


def test_a_fresh_run_starts_at_round_0_from_the_model_and_the_seeded_sampler(built: TaskAndModel, tmp_path: Path) -> None:
    config = parse_run_config({**VALUES, "output-dir": str(tmp_path)})
    state = RunState.fresh(config, built, FakeGrid(lambda m, c: m, 1), "ffa")
    random.seed(5)
    assert state.rng_state == random.getstate()  # what Flower's node sampling then draws from
    assert (state.round_offset, state.rows, state.ledger.rows, state.broadcast, state.strategy_state) == (0, [], [], None, None)
    assert {k: v.tobytes() for k, v in state.start_arrays.items()} == {k: v.tobytes() for k, v in extract(built.model).items()}
    assert state.summary() == {} and state.open_folder(config).path.parent == tmp_path.resolve()


def test_a_resumed_run_takes_every_value_from_the_checkpoint(built: TaskAndModel, tmp_path: Path) -> None:
    frozen = {k: np.full_like(v, 0.5) for k, v in frozen_factors(built.model).items()}
    payload = {k: v + 1 for k, v in extract(built.model).items()}
    rng = random.Random(99).getstate()
    checkpoint = Checkpoint(
        server_round=3, config={}, global_arrays=payload, frozen=frozen, strategy_arrays={"log/x": np.ones(2)},
        strategy_meta={"log": {"v": 1}}, rng_state=rng, ledger=[LedgerRow(1, 7, "up", "train", 10)],
        rows=[{"round": 0}, {"round": 3}], broadcast={"round": 3},
    )
    (tmp_path / "rounds.jsonl").write_text('{"round": 0}\n{"round": 3}\n{"round": 4}\n')  # round 4 never checkpointed
    state = RunState.resumed(checkpoint, built, tmp_path)
    assert (state.round_offset, state.rng_state, state.broadcast, state.rows) == (3, rng, {"round": 3}, checkpoint.rows)
    assert state.start_arrays is payload and state.ledger.rows == checkpoint.ledger
    for key, value in frozen_factors(built.model).items():  # the saved factors, not a new set-up
        np.testing.assert_array_equal(value, frozen[key])
    assert state.summary() == {"resumed_after_round": 3}
    folder = state.open_folder(parse_run_config(VALUES))
    assert folder.path == tmp_path.resolve() and folder.rounds_path.read_text().count("\n") == 2

    class Restored(FedIT):
        got: tuple[object, object] | None = None

        def restore_state(self, arrays, meta):  # noqa: ANN001, ANN202 - the protocol's signature
            type(self).got = (dict(arrays), dict(meta))

    state.restore(Restored())
    assert Restored.got is not None and Restored.got[1] == {"log": {"v": 1}}
    Restored.got = None
    RunState.fresh(parse_run_config(VALUES), built, FakeGrid(lambda m, c: m, 1), "ffa").restore(Restored())
    assert Restored.got is None  # a fresh strategy keeps its own state


def test_a_fresh_config_has_no_checkpoint_and_a_resumed_one_must_match(tmp_path: Path) -> None:
    assert load_checkpoint(parse_run_config(VALUES)) is None
    with pytest.raises(CheckpointError, match="has no checkpoint.safetensors"):
        load_checkpoint(parse_run_config({**VALUES, "resume-from": str(tmp_path)}))


def _checkpoint(built: TaskAndModel, *, server_round: int = 2, **changes: object) -> Checkpoint:
    fields: dict[str, object] = {
        "server_round": server_round, "config": parse_run_config(VALUES).to_flat(), "global_arrays": extract(built.model),
        "frozen": frozen_factors(built.model), "strategy_arrays": {}, "strategy_meta": {},
        "rng_state": random.Random(1).getstate(), "ledger": [], "rows": [{"round": 0}],
    }
    return Checkpoint(**{**fields, **changes})  # type: ignore[arg-type]


def test_arrays_that_do_not_fit_the_model_fail_at_resume_not_at_export(built: TaskAndModel, tmp_path: Path) -> None:
    payload = extract(built.model)
    key = next(iter(payload))
    cases = {
        "missing": ({k: v for k, v in payload.items() if k != key}, f"missing ['{key}']"),
        "unexpected": ({**payload, "extra.weight": np.ones(2, np.float32)}, "unexpected ['extra.weight']"),
        "shape": ({**payload, key: np.ones((1, 1), np.float32)}, f"`{key}` is float32(1, 1), the model has float32"),
        "dtype": ({**payload, key: payload[key].astype(np.float64)}, f"`{key}` is float64"),
    }
    for arrays, expected in cases.values():
        with pytest.raises(CheckpointError, match="global adapter .* do not fit the model this config builds") as err:
            RunState.resumed(_checkpoint(built, global_arrays=arrays), built, tmp_path)
        assert expected in str(err.value)
    frozen = frozen_factors(built.model)
    assert frozen  # FFA: A is frozen
    bad = {k: np.ones((3, 3), np.float32) for k in frozen}
    with pytest.raises(CheckpointError, match="frozen factors .* do not fit"):
        RunState.resumed(_checkpoint(built, frozen=bad), built, tmp_path)
    RunState.resumed(_checkpoint(built), built, tmp_path)  # the arrays this model has: fine


def test_a_strategy_state_that_cannot_be_restored_is_a_checkpoint_error(built: TaskAndModel, tmp_path: Path) -> None:
    from strategies.fedex import FedExLoRA
    from strategies.layout import LoraPair

    state = RunState.resumed(_checkpoint(built, strategy_meta={"log": {"not": "a log"}}), built, tmp_path)
    with pytest.raises(CheckpointError, match="strategy state .* cannot be restored into FedExLoRA"):
        state.restore(FedExLoRA(layout={"m": LoraPair("m.A", "m.B", 1.0)}))


def test_num_server_rounds_below_the_checkpoint_round_is_refused(built: TaskAndModel, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    _checkpoint(built, server_round=3, rows=[{"round": 0}, {"round": 3}]).save(folder)
    for rounds in (2, 3):
        config = parse_run_config({**VALUES, "resume-from": str(folder), "num-server-rounds": rounds})
        with pytest.raises(CheckpointError, match=f"`num-server-rounds` = {rounds} leaves nothing to run"):
            load_checkpoint(config)
    config = parse_run_config({**VALUES, "resume-from": str(folder), "num-server-rounds": 5})
    assert load_checkpoint(config).server_round == 3  # type: ignore[union-attr]
