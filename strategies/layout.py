"""Where the LoRA factors live in the shipped arrays: plain data, no torch.

``adapters.layout(model)`` produces a :data:`Layout` on the server; strategies use it to pair each
adapted module's ``A`` and ``B`` tensors by key without importing torch or PEFT.

Notation follows ``algorithms.md`` §0.2: a LoRA module computes ``W = W0 + s·B A`` with
``B: (m, r)`` (PEFT ``lora_B.weight``), ``A: (r, n)`` (PEFT ``lora_A.weight``) and ``s = α/r``
(``α/√r`` with rsLoRA). ``fan_in_fan_out`` layers (GPT-2 ``Conv1D``) store the base weight as
``(n, m)``, so a dense delta computed as ``(m, n)`` MUST be transposed before it is added there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LoraPair:
    """The two factor tensors of one LoRA-adapted module.

    Parameters
    ----------
    a_key : str
        Array key of ``A`` with shape ``(r, n)``.
    b_key : str
        Array key of ``B`` with shape ``(m, r)``.
    scale : float
        LoRA scale ``s`` (``α/r``, or ``α/√r`` with rsLoRA).
    fan_in_fan_out : bool (default: False)
        True when the base layer stores its weight as ``(n, m)`` (GPT-2 ``Conv1D``).
    a2_key, b2_key : str (default: "")
        ABBA only (algorithms.md §4.1): the second pair ``A2: (r2, n)``, ``B2: (m, r2)``; the module's
        update is then ``s·(B A) ⊙ (B2 A2)``.
    """

    a_key: str
    b_key: str
    scale: float
    fan_in_fan_out: bool = False
    a2_key: str = ""
    b2_key: str = ""

    @property
    def is_abba(self) -> bool:
        """True for an ABBA module (two factor pairs, Hadamard update)."""
        return bool(self.a2_key)

    def __post_init__(self) -> None:
        """Reject values that cannot describe a LoRA module."""
        if not self.a_key or not self.b_key:
            raise ValueError(f"LoraPair needs non-empty a_key and b_key, got {self!r}")
        if self.a_key == self.b_key:
            raise ValueError(f"LoraPair a_key and b_key must differ, both are {self.a_key!r}")
        if not math.isfinite(self.scale):
            raise ValueError(f"LoraPair scale must be finite, got {self.scale!r}")
        if bool(self.a2_key) != bool(self.b2_key):
            raise ValueError(f"LoraPair needs both a2_key and b2_key (ABBA) or neither, got {self!r}")


Layout = dict[str, LoraPair]
"""Module name -> its :class:`LoraPair`."""

_FIELDS = ("a_key", "b_key", "scale", "fan_in_fan_out", "a2_key", "b2_key")


def layout_to_config(layout: Mapping[str, LoraPair]) -> dict[str, dict[str, Any]]:
    """Turn a layout into plain JSON-able data (``json.dumps`` works on the result).

    Parameters
    ----------
    layout : Mapping[str, LoraPair]
        Module name -> factor pair.

    Returns
    -------
    dict[str, dict[str, Any]]
        ``{module: {"a_key": str, "b_key": str, "scale": float, "fan_in_fan_out": bool}}``.
    """
    return {module: asdict(pair) for module, pair in layout.items()}


def layout_from_config(config: Mapping[str, Mapping[str, Any]]) -> Layout:
    """Inverse of :func:`layout_to_config`; every problem is reported together.

    Raises
    ------
    ValueError
        If an entry is not a mapping, misses or adds fields, or has wrongly typed values.
    """
    layout: Layout = {}
    problems: list[str] = []
    for module, entry in config.items():
        if not isinstance(entry, Mapping):
            problems.append(f"layout[{module!r}] must be a mapping with {_FIELDS}, got {entry!r}")
            continue
        missing = [f for f in ("a_key", "b_key", "scale") if f not in entry]
        extra = sorted(set(entry) - set(_FIELDS))
        if missing or extra:
            problems.append(f"layout[{module!r}]: missing fields {missing}, unknown fields {extra}")
            continue
        a_key, b_key, scale = entry["a_key"], entry["b_key"], entry["scale"]
        fifo = entry.get("fan_in_fan_out", False)
        if not (isinstance(a_key, str) and isinstance(b_key, str)):
            problems.append(f"layout[{module!r}]: a_key and b_key must be strings")
            continue
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            problems.append(f"layout[{module!r}]: scale must be a number, got {scale!r}")
            continue
        if not isinstance(fifo, bool):
            problems.append(f"layout[{module!r}]: fan_in_fan_out must be a bool, got {fifo!r}")
            continue
        second = (entry.get("a2_key", ""), entry.get("b2_key", ""))
        if not all(isinstance(k, str) for k in second):
            problems.append(f"layout[{module!r}]: a2_key and b2_key must be strings")
            continue
        try:
            layout[module] = LoraPair(a_key, b_key, float(scale), fifo, *second)
        except ValueError as exc:
            problems.append(f"layout[{module!r}]: {exc}")
    if problems:
        raise ValueError("invalid LoRA layout:\n  - " + "\n  - ".join(problems))
    return layout


def check_layout(layout: Mapping[str, LoraPair], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Check that a layout matches the shipped arrays.

    Parameters
    ----------
    layout : Mapping[str, LoraPair]
        Module name -> factor pair.
    shapes : Mapping[str, tuple[int, ...]]
        Array key -> shape of the arrays the server sends.

    Raises
    ------
    ValueError
        Naming every module whose keys are absent, whose factors are not 2-D, or whose ranks differ
        (``A: (r, n)`` and ``B: (m, r)`` must share ``r``).
    """
    problems: list[str] = []
    for module, pair in layout.items():
        keys = (pair.a_key, pair.b_key, pair.a2_key, pair.b2_key) if pair.is_abba else (pair.a_key, pair.b_key)
        absent = [k for k in keys if k not in shapes]
        if absent:
            problems.append(f"{module}: keys {absent} are not among the shipped arrays")
            continue
        a_shape, b_shape = shapes[pair.a_key], shapes[pair.b_key]
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            problems.append(
                f"{module}: expected A (r, n) and B (m, r), got A {a_shape} and B {b_shape}"
            )
        elif pair.is_abba:
            a2_shape, b2_shape = shapes[pair.a2_key], shapes[pair.b2_key]
            if len(a2_shape) != 2 or len(b2_shape) != 2 or a2_shape[0] != b2_shape[1] or \
                    (b2_shape[0], a2_shape[1]) != (b_shape[0], a_shape[1]):
                problems.append(f"{module}: ABBA's A2 {a2_shape}, B2 {b2_shape} do not fit A {a_shape}, B {b_shape}")
    if problems:
        raise ValueError(
            "the LoRA layout does not match the arrays being sent (was it built from the same "
            "model?):\n  - " + "\n  - ".join(problems)
        )
