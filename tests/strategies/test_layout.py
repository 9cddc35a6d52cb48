"""LoRA layout: plain-data round trip and checks against shipped arrays."""

from __future__ import annotations

import json

import pytest

from strategies.layout import LoraPair, check_layout, layout_from_config, layout_to_config

LAYOUT = {
    "layers.0.q_proj": LoraPair("q.lora_A.weight", "q.lora_B.weight", 2.0),
    "h.0.attn.c_attn": LoraPair("c.lora_A.weight", "c.lora_B.weight", 8.0, fan_in_fan_out=True),
}


def test_round_trip_through_json() -> None:
    assert layout_from_config(json.loads(json.dumps(layout_to_config(LAYOUT)))) == LAYOUT


def test_fan_in_fan_out_defaults_to_false() -> None:
    got = layout_from_config({"m": {"a_key": "A", "b_key": "B", "scale": 1}})
    assert got["m"] == LoraPair("A", "B", 1.0, False)


def test_bad_config_reports_every_problem() -> None:
    bad = {
        "x": {"a_key": "A", "scale": 1.0},
        "y": {"a_key": "A", "b_key": "B", "scale": "big"},
        "z": {"a_key": "A", "b_key": "A", "scale": 1.0},
        "w": 3,
    }
    with pytest.raises(ValueError) as info:
        layout_from_config(bad)  # type: ignore[arg-type]
    text = str(info.value)
    for module in ("'x'", "'y'", "'z'", "'w'"):
        assert module in text


def test_check_layout() -> None:
    shapes = {"q.lora_A.weight": (4, 16), "q.lora_B.weight": (8, 4)}
    check_layout({"q": LAYOUT["layers.0.q_proj"]}, shapes)
    with pytest.raises(ValueError, match="not among the shipped arrays"):
        check_layout(LAYOUT, shapes)
    with pytest.raises(ValueError, match=r"A \(4, 16\) and B \(8, 3\)"):
        check_layout({"q": LAYOUT["layers.0.q_proj"]}, {**shapes, "q.lora_B.weight": (8, 3)})
