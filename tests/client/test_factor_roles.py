"""The client side of partial payloads: completing, freezing, trimming and the node state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from client.factor_roles import STATE_GLOBAL, STATE_LOCAL, GlobalVersionMismatch, RoundFactors
from contract import CONFIG
from contract.factor_roles import (
    FIXED_LAYERS,
    GLOBAL_FROM_VERSION,
    GLOBAL_VERSION,
    LOCAL_LAYERS,
    decode_layers,
    encode_layers,
    in_layers,
)

KEYS = {"q.lora_A.weight": (2, 5), "q.lora_B.weight": (6, 2), "head.weight": (3, 4)}
SPEC = {k: (shape, np.dtype(np.float32)) for k, shape in KEYS.items()}


def _arrays(value: float, keys=KEYS) -> dict[str, np.ndarray]:
    return {k: np.full(KEYS[k], value, dtype=np.float32) for k in keys}


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


def _factors(context: Context, **config) -> RoundFactors:
    return RoundFactors.of(RecordDict({CONFIG: ConfigRecord(config)}), context)


def test_a_message_without_roles_passes_through() -> None:
    factors = _factors(_context())
    received = _arrays(1.0)
    assert not factors.active
    assert factors.reply(received) == received and factors.reply_metrics() == {}


def test_local_layers_start_at_zero_then_come_from_the_state() -> None:
    context = _context()
    first = _factors(context, **{LOCAL_LAYERS: "lora_B"})
    sent = {k: v for k, v in _arrays(1.0).items() if ".lora_B." not in k}
    whole = first.complete_spec(sent, SPEC)
    assert set(whole) == set(KEYS) and not np.any(whole["q.lora_B.weight"])
    trained = _arrays(3.0)
    assert set(first.reply(trained)) == {"q.lora_A.weight", "head.weight"}
    assert STATE_LOCAL not in context.state  # nothing is kept before the work succeeded
    first.commit(trained)
    assert set(context.state[STATE_LOCAL].keys()) == {"q.lora_B.weight"}  # only the local layer
    second = _factors(context, **{LOCAL_LAYERS: "lora_B"})
    np.testing.assert_array_equal(second.complete_spec(sent, SPEC)["q.lora_B.weight"], trained["q.lora_B.weight"])
    assert not np.any(second.complete_spec(sent, SPEC, personal=False)["q.lora_B.weight"])  # the global model


def test_stored_local_layers_that_do_not_fit_are_refused() -> None:
    context = _context()
    factors = _factors(context, **{LOCAL_LAYERS: "lora_B"})
    factors.commit(_arrays(1.0))
    wrong = {**SPEC, "q.lora_B.weight": ((6, 3), np.dtype(np.float32))}
    with pytest.raises(ValueError, match="adapter"):
        factors.complete_spec({}, wrong)


def test_changes_only_are_merged_over_the_stored_copy_of_the_global_adapter() -> None:
    context = _context()
    full = _factors(context, **{GLOBAL_VERSION: 1})
    first = full.complete_spec(_arrays(1.0), SPEC)
    full.commit()
    assert set(context.state[STATE_GLOBAL].keys()) == set(KEYS)
    changes = _factors(context, **{GLOBAL_VERSION: 2, GLOBAL_FROM_VERSION: 1})
    whole = changes.complete_spec({"q.lora_B.weight": np.full((6, 2), 5.0, np.float32)}, SPEC)
    np.testing.assert_array_equal(whole["q.lora_A.weight"], first["q.lora_A.weight"])
    assert np.all(whole["q.lora_B.weight"] == 5.0)
    assert changes.reply_metrics() == {GLOBAL_VERSION: 2}


@pytest.mark.parametrize("held", [None, 3])
def test_changes_from_a_version_the_node_does_not_hold_are_refused(held: int | None) -> None:
    context = _context()
    if held is not None:
        factors = _factors(context, **{GLOBAL_VERSION: held})
        factors.complete_spec(_arrays(1.0), SPEC)
        factors.commit()
    with pytest.raises(GlobalVersionMismatch, match="since version 1"):
        _factors(context, **{GLOBAL_VERSION: 2, GLOBAL_FROM_VERSION: 1}).complete_spec({}, SPEC)


def test_fixed_layers_do_not_train_for_the_round_and_are_left_out_of_the_reply() -> None:
    model = torch.nn.ModuleDict({"q": torch.nn.ModuleDict({"lora_A": torch.nn.Linear(5, 2), "lora_B": torch.nn.Linear(2, 6)})})
    factors = _factors(_context(), **{FIXED_LAYERS: "lora_A"})
    with factors.training(model):
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q.lora_B.weight", "q.lora_B.bias"}
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards
    assert set(factors.reply(_arrays(1.0))) == {"q.lora_B.weight", "head.weight"}


def test_layer_lists_round_trip_and_bad_names_are_refused() -> None:
    assert decode_layers(encode_layers(["lora_B", "lora_A", "lora_B"])) == ("lora_A", "lora_B")
    assert decode_layers("") == () and decode_layers(None) == ()
    assert in_layers("m.q_proj.lora_B.weight", ["lora_B"]) and not in_layers("m.lora_Bx.weight", ["lora_B"])
    with pytest.raises(ValueError, match="PEFT adapter layers"):
        encode_layers(["B"])
    with pytest.raises(ValueError, match="comma-separated"):
        decode_layers(3)
