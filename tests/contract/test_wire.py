"""contract.wire: the payload's wire dtypes round like torch, decode exactly and halve the bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from contract.wire import (
    bf16_bits_to_float32,
    decode_record,
    encode_record,
    float32_to_bf16_bits,
    round_to_wire,
)

RNG = np.random.default_rng(0)
VALUES = np.concatenate([
    (RNG.standard_normal(4000) * 10.0 ** RNG.integers(-8, 8, 4000)).astype(np.float32),
    np.array([0.0, -0.0, 1.0, -1.0, 3.0e38, -3.0e38, 1e-40, np.finfo(np.float32).tiny], np.float32),
    # exact ties between two bf16 values: round half to even both ways
    (np.array([0x3F808000, 0x3F818000, 0xBF808000], np.uint32)).view(np.float32),
])


def test_bf16_bits_are_torchs_round_to_nearest_even() -> None:
    ours = float32_to_bf16_bits(VALUES)
    theirs = torch.from_numpy(VALUES).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    decoded = bf16_bits_to_float32(ours)
    np.testing.assert_array_equal(decoded, torch.from_numpy(VALUES).to(torch.bfloat16).float().numpy())


@pytest.mark.parametrize("wire", ["float32", "bfloat16", "float16"])
def test_round_trip_is_idempotent_and_decodes_to_float32(wire: str) -> None:
    # adapter-sized values (fp16's normal range starts at 6e-5)
    arrays = {"a": (0.02 * RNG.standard_normal((40, 100))).astype(np.float32), "b": RNG.standard_normal((3, 5)).astype(np.float32)}
    once = round_to_wire(arrays, wire)
    assert all(v.dtype == np.float32 for v in once.values())
    twice = round_to_wire(once, wire)  # a value the wire carries travels unchanged
    for key in arrays:
        np.testing.assert_array_equal(once[key], twice[key])
    record = decode_record(encode_record(arrays, wire), wire)
    for key in arrays:
        np.testing.assert_array_equal(record[key].numpy(), once[key])
    normal = {k: np.abs(v) >= 6.2e-5 for k, v in arrays.items()}  # fp16 subnormals have coarser relative steps
    rel = max(float(np.max(np.abs(once[k] - arrays[k])[normal[k]] / np.abs(arrays[k])[normal[k]])) for k in arrays)
    assert rel == 0.0 if wire == "float32" else rel <= {"bfloat16": 2.0**-8, "float16": 2.0**-10}[wire]


@pytest.mark.parametrize("wire", ["bfloat16", "float16"])
def test_a_two_byte_wire_dtype_halves_the_data_bytes_exactly(wire: str) -> None:
    arrays = {f"layer{i}.lora_A.weight": RNG.standard_normal((8, 64 + i)).astype(np.float32) for i in range(5)}
    full = ArrayRecord({k: Array(v) for k, v in arrays.items()}).count_bytes()
    half = encode_record(arrays, wire).count_bytes()
    data = sum(v.size for v in arrays.values()) * 4
    assert full - half == data // 2
