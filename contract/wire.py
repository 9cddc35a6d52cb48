"""The adapter payload's dtype on the wire (``adapter.wire-dtype``, ``docs/precision.md §5``).

Payload arrays are float32 in every process; on the wire they may travel as ``float16`` (numpy's
IEEE half) or ``bfloat16``, which numpy lacks, so it travels as its bit pattern in ``uint16`` (the
upper half of the float32 bits, rounded to nearest even). Both halve the payload's bytes exactly
(Flower counts the npy bytes; the npy header has the same length). Both sides know the run's wire
dtype from the shared run config, so nothing extra travels. Decoding is exact: every bf16 or fp16
value is a float32. Only the ``arrays`` record is re-encoded: base deltas, frozen factors and
plugin records stay float32.

numpy only (the contract imports no torch).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

WIRE_DTYPES = ("float32", "bfloat16", "float16")


def _check(wire_dtype: str) -> None:
    if wire_dtype not in WIRE_DTYPES:
        raise ValueError(f"`adapter.wire-dtype` = {wire_dtype!r}; use one of {', '.join(WIRE_DTYPES)}")


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (``uint16``) of float32 ``x``, rounded to nearest, ties to even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # RNE on the dropped 16 bits
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (exact)."""
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode_array(x: np.ndarray, wire_dtype: str) -> np.ndarray:
    """A float32 array as it travels: unchanged, ``float16``, or bf16 bits in ``uint16``."""
    _check(wire_dtype)
    if wire_dtype == "float32" or not np.issubdtype(np.asarray(x).dtype, np.floating):
        return np.asarray(x)
    if wire_dtype == "float16":
        return np.asarray(x, dtype=np.float32).astype(np.float16)
    return float32_to_bf16_bits(x)


def decode_array(x: np.ndarray, wire_dtype: str) -> np.ndarray:
    """The float32 array a received one stands for (inverse of :func:`encode_array`; others unchanged)."""
    _check(wire_dtype)
    if wire_dtype == "float16" and x.dtype == np.float16:
        return x.astype(np.float32)
    if wire_dtype == "bfloat16" and x.dtype == np.uint16:
        return bf16_bits_to_float32(x)
    return x


def round_to_wire(arrays: Mapping[str, np.ndarray], wire_dtype: str) -> dict[str, np.ndarray]:
    """Float32 arrays holding exactly what the receiver decodes (the wire's rounding applied)."""
    return {k: decode_array(encode_array(v, wire_dtype), wire_dtype) for k, v in arrays.items()}


def decode_arrays(arrays: Mapping[str, np.ndarray], wire_dtype: str) -> dict[str, np.ndarray]:
    """:func:`decode_array` of every entry."""
    return {k: decode_array(v, wire_dtype) for k, v in arrays.items()}


def encode_record(arrays: Mapping[str, np.ndarray], wire_dtype: str) -> ArrayRecord:
    """An ``ArrayRecord`` of the arrays in their wire form (key order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(encode_array(v, wire_dtype))) for k, v in arrays.items()})


def decode_record(record: ArrayRecord, wire_dtype: str) -> ArrayRecord:
    """The float32 ``ArrayRecord`` a received one stands for (a float32 record comes back as is)."""
    if wire_dtype == "float32":
        return record
    return ArrayRecord({k: Array(np.ascontiguousarray(decode_array(a.numpy(), wire_dtype))) for k, a in record.items()})
