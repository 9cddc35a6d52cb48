"""The model.*, train.*, adapter.* and audit.* keys of docs/precision.md: defaults, auto and refusals."""

from __future__ import annotations

import pytest

from contract import ConfigError, parse_run_config


def test_defaults_and_auto_storage() -> None:
    config = parse_run_config({})
    assert (config.model.device, config.model.dtype, config.model.quantization) == ("auto", "float32", "none")
    assert config.model.base_delta_storage() == "fold" and config.audit.exactness == "auto"
    assert config.adapter.wire_dtype == "float32" and config.train.gradient_checkpointing is False
    assert parse_run_config({"model.dtype": "bfloat16"}).model.base_delta_storage() == "float32"
    assert parse_run_config({"model.quantization": "nf4"}).model.base_delta_storage() == "float32"
    assert parse_run_config({"model.dtype": "bfloat16", "model.base-delta": "fold"}).model.base_delta_storage() == "fold"
    assert parse_run_config({"audit.exactness": False}).audit.exactness is False


@pytest.mark.parametrize(("values", "message"), [
    ({"model.device": "gpu"}, "must be `auto`, `cpu`, `cuda` or `cuda:N`"),
    ({"model.dtype": "float64"}, "model.dtype"),
    ({"model.quantization": "nf4", "model.base-delta": "fold"}, "cannot write into a `nf4` quantized base"),
    ({"train.gradient-checkpointing": True, "privacy.enabled": True, "privacy.noise-multiplier": 1.0},
     "cannot run with `privacy.enabled = true`"),
    ({"adapter.wire-dtype": "int8"}, "adapter.wire-dtype"),
])
def test_impossible_values_fail_at_start_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("`", "`")):
        parse_run_config(values)
