"""Where the LoRA factors live in the shipped arrays: plain data, no torch.

``adapters.payload.layout(model)`` gives the plain data of a :data:`Layout` on the server;
strategies use it to find each adapted module's factor tensors by key without importing torch or
PEFT, and its form (:mod:`strategies.factor_forms`) to know what the factors mean.

Notation follows ``docs/algorithms.md §1``: a LoRA module computes ``W = W0 + s·B A`` with
``B: (m, r)`` (PEFT ``lora_B.weight``), ``A: (r, n)`` (PEFT ``lora_A.weight``) and ``s = α/r``
(``α/√r`` with rsLoRA). ``fan_in_fan_out`` layers (GPT-2 ``Conv1D``) store the base weight as
``(n, m)``, so a dense delta computed as ``(m, n)`` MUST be transposed before it is added there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .factor_forms import KEY_FIELDS, FactorForm, factor_form, form_filling


@dataclass(frozen=True)
class LoraPair:
    """The factor tensors of one adapted module, and the form their maths follows.

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
        The second pair ``A2: (r2, n)``, ``B2: (m, r2)`` of the ``hadamard-pairs`` form (ABBA), whose update is
        ``s·(B A) ⊙ (B2 A2)`` (``docs/algorithms.md §10.1``).
    form : str (default: "")
        The :class:`~strategies.factor_forms.FactorForm` of the module (``"pair"``, ``"hadamard-pairs"``, ...);
        empty: the registered form that fills exactly the key fields given.
    """

    a_key: str
    b_key: str
    scale: float
    fan_in_fan_out: bool = False
    a2_key: str = ""
    b2_key: str = ""
    form: str = ""

    def __post_init__(self) -> None:
        """Reject values that cannot describe an adapted module; fill in ``form`` when empty."""
        if not self.a_key or not self.b_key:
            raise ValueError(f"LoraPair needs non-empty a_key and b_key, got {self!r}")
        keys = [self.a_key, self.b_key, self.a2_key, self.b2_key]
        filled = {field for field, key in zip(KEY_FIELDS, keys, strict=True) if key}
        if len({k for k in keys if k}) != len(filled):
            raise ValueError(f"LoraPair keys must differ, got {[k for k in keys if k]}")
        if not math.isfinite(self.scale):
            raise ValueError(f"LoraPair scale must be finite, got {self.scale!r}")
        form = factor_form(self.form) if self.form else form_filling(filled)
        if set(form.key_fields) != filled:
            raise ValueError(f"LoraPair of form {form.name!r} needs exactly the keys {list(form.key_fields)}, got {sorted(filled)}")
        object.__setattr__(self, "form", form.name)

    @property
    def factor_form(self) -> FactorForm:
        """The registered form of this module."""
        return factor_form(self.form)

    @property
    def keys(self) -> tuple[str, ...]:
        """The module's factor array keys (the form's key fields, in order)."""
        return self.factor_form.keys(self)


Layout = dict[str, LoraPair]
"""Module name -> its :class:`LoraPair`."""

_FIELDS = ("a_key", "b_key", "scale", "fan_in_fan_out", "a2_key", "b2_key", "form")


def layout_to_config(layout: Mapping[str, LoraPair]) -> dict[str, dict[str, Any]]:
    """Turn a layout into plain JSON-able data (``json.dumps`` works on the result).

    Parameters
    ----------
    layout : Mapping[str, LoraPair]
        Module name -> factor pair.

    Returns
    -------
    dict[str, dict[str, Any]]
        ``{module: {"a_key": str, "b_key": str, "scale": float, "fan_in_fan_out": bool, "a2_key": str,
        "b2_key": str, "form": str}}``.
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
        second = (entry.get("a2_key", ""), entry.get("b2_key", ""), entry.get("form", ""))
        if not all(isinstance(k, str) for k in second):
            problems.append(f"layout[{module!r}]: a2_key, b2_key and form must be strings")
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
        Naming every module whose keys are absent or whose shapes do not fit its form (e.g. LoRA's
        ``A: (r, n)`` and ``B: (m, r)`` must be 2-D and share ``r``).
    """
    problems: list[str] = []
    for module, pair in layout.items():
        absent = [k for k in pair.keys if k not in shapes]
        if absent:
            problems.append(f"{module}: keys {absent} are not among the shipped arrays")
            continue
        problem = pair.factor_form.shape_problem(pair, shapes)
        if problem is not None:
            problems.append(f"{module}: {problem}")
    if problems:
        raise ValueError(
            "the LoRA layout does not match the arrays being sent (was it built from the same "
            "model?):\n  - " + "\n  - ".join(problems)
        )
