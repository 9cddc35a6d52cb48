"""The numpy side of each layout form: which factors a module ships and what their update is.

A layout entry (:class:`~strategies.layout.LoraPair`) names one module's factor arrays and its
*form*, the maths those factors follow. Strategies never branch on an adapter kind: they ask the
entry's :class:`FactorForm` for what they need. A new form registers itself with
:func:`register_factor_form`; the adapter kind that ships it names it (``adapters``'
``layout_form``). Built in (``docs/algorithms.md §1``, ``§10.1``):

==================  ====================  ===================================================
form                layout key fields     update of one module
==================  ====================  ===================================================
``pair``            ``a_key``, ``b_key``  ``s·B A`` with ``B: (m, r)``, ``A: (r, n)`` (LoRA)
``hadamard-pairs``  + ``a2_key, b2_key``  ``s·(B1 A1) ⊙ (B2 A2)`` (ABBA, arXiv:2505.14238)
==================  ====================  ===================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .maths.averaging import Arrays
from .maths.deviation import lora_deviation
from .maths.hadamard import AbbaFactors, abba_aggregate
from .maths.residual import fedex_aggregate
from .maths.transport import ResidualTransport

if TYPE_CHECKING:
    from .layout import LoraPair

KEY_FIELDS = ("a_key", "b_key", "a2_key", "b2_key")
"""Every :class:`~strategies.layout.LoraPair` field that can name a factor array."""


class FactorForm(ABC):
    """What strategies need to know about one layout form.

    Class attributes
    ----------------
    name : str
        The form's name, as a layout entry's ``form`` field holds it.
    key_fields : tuple[str, ...]
        The :data:`KEY_FIELDS` an entry of this form fills (exactly these; the others stay empty).
    """

    name: ClassVar[str]
    key_fields: ClassVar[tuple[str, ...]]

    def keys(self, pair: LoraPair) -> tuple[str, ...]:
        """The module's factor array keys, in :attr:`key_fields` order."""
        values = {"a_key": pair.a_key, "b_key": pair.b_key, "a2_key": pair.a2_key, "b2_key": pair.b2_key}
        return tuple(values[field] for field in self.key_fields)

    @abstractmethod
    def shape_problem(self, pair: LoraPair, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Why the shipped shapes cannot hold this module's factors, or ``None`` when they fit.

        Called with every key of :meth:`keys` present in ``shapes``.
        """

    @abstractmethod
    def exact_residual(self, clients: Sequence[Arrays], weights: np.ndarray, pair: LoraPair) -> ResidualTransport:
        """``Σ p_i ΔW_i − ΔW(factor means)`` for this module, ``(m, n)``, scale included.

        What FedEx-LoRA folds into the base so that the factor means plus the new base equal the
        mean of the clients' models (``docs/algorithms.md §4``, ``§10.3``). ``weights: (K,)``.
        """

    def deviation(self, clients: Sequence[Arrays], weights: np.ndarray, pair: LoraPair) -> float | None:
        """FedIT's ``dev_rel`` for this module (``docs/algorithms.md §3``); ``None``: not defined."""
        return None


class PairForm(FactorForm):
    """LoRA: ``ΔW = s·B A`` with ``B: (m, r)``, ``A: (r, n)`` (arXiv:2106.09685 §4.1)."""

    name = "pair"
    key_fields = ("a_key", "b_key")

    def shape_problem(self, pair: LoraPair, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """``A: (r, n)`` and ``B: (m, r)`` must be 2-D and share ``r``."""
        a_shape, b_shape = shapes[pair.a_key], shapes[pair.b_key]
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            return f"expected A (r, n) and B (m, r), got A {a_shape} and B {b_shape}"
        return None

    def exact_residual(self, clients: Sequence[Arrays], weights: np.ndarray, pair: LoraPair) -> ResidualTransport:
        """``s·(Σ p_i B_i A_i − B̄ Ā)`` in the pivot form (:func:`~strategies.maths.residual.fedex_aggregate`)."""
        return fedex_aggregate(
            [c[pair.a_key] for c in clients],  # A_i: (r, n)
            [c[pair.b_key] for c in clients],  # B_i: (m, r)
            weights,
            pair.scale,
        ).residual  # s·ΔW_res: (m, n), the cheaper exact form

    def deviation(self, clients: Sequence[Arrays], weights: np.ndarray, pair: LoraPair) -> float | None:
        """:func:`~strategies.maths.deviation.lora_deviation` of this module."""
        return lora_deviation(clients, weights, {"module": pair})["module"]


class AbbaForm(FactorForm):
    """ABBA: ``ΔW = s·(B1 A1) ⊙ (B2 A2)`` (arXiv:2505.14238; ``docs/algorithms.md §10.1``).

    ``a_key``/``b_key`` hold ``A1: (r1, n)``/``B1: (m, r1)``, ``a2_key``/``b2_key`` hold
    ``A2: (r2, n)``/``B2: (m, r2)``. FedIT's ``dev_rel`` (a ``B A`` measure) is not defined for it.
    """

    name = "hadamard-pairs"
    key_fields = ("a_key", "b_key", "a2_key", "b2_key")

    def shape_problem(self, pair: LoraPair, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Both pairs chain (``A: (r, n)``, ``B: (m, r)``) and share ``(m, n)``."""
        problem = PAIR.shape_problem(pair, shapes)
        if problem is not None:
            return problem
        a_shape, b_shape = shapes[pair.a_key], shapes[pair.b_key]
        a2_shape, b2_shape = shapes[pair.a2_key], shapes[pair.b2_key]
        if len(a2_shape) != 2 or len(b2_shape) != 2 or a2_shape[0] != b2_shape[1] or \
                (b2_shape[0], a2_shape[1]) != (b_shape[0], a_shape[1]):
            return f"ABBA's A2 {a2_shape}, B2 {b2_shape} do not fit A {a_shape}, B {b_shape}"
        return None

    def exact_residual(self, clients: Sequence[Arrays], weights: np.ndarray, pair: LoraPair) -> ResidualTransport:
        """``s·(Σ p_i (B1A1)⊙(B2A2) − (B̄1Ā1)⊙(B̄2Ā2))`` (:func:`~strategies.maths.hadamard.abba_aggregate`)."""
        factors = [AbbaFactors(c[pair.b_key], c[pair.a_key], c[pair.b2_key], c[pair.a2_key]) for c in clients]
        return abba_aggregate(factors, weights, pair.scale).residual  # (m, n)


_FORMS: dict[str, FactorForm] = {}


def register_factor_form(form: FactorForm) -> FactorForm:
    """Make ``form`` available to layouts under ``form.name``; returns it.

    Raises
    ------
    ValueError
        If the name is taken, or the key fields are not a non-empty subset of :data:`KEY_FIELDS`
        starting with ``a_key, b_key``, or another form fills the same fields.
    """
    fields = tuple(form.key_fields)
    if fields[:2] != ("a_key", "b_key") or not set(fields) <= set(KEY_FIELDS) or len(set(fields)) != len(fields):
        raise ValueError(f"factor form {form.name!r}: key_fields {fields} must start with a_key, b_key and use {KEY_FIELDS}")
    if form.name in _FORMS:
        raise ValueError(f"factor form {form.name!r} is already registered ({type(_FORMS[form.name]).__qualname__})")
    same = [f.name for f in _FORMS.values() if set(f.key_fields) == set(fields)]
    if same:
        raise ValueError(f"factor form {form.name!r} fills the same key fields as {same[0]!r}; layouts could not tell them apart")
    _FORMS[form.name] = form
    return form


def factor_form(name: str) -> FactorForm:
    """The form registered as ``name`` (ValueError listing the registered ones)."""
    try:
        return _FORMS[name]
    except KeyError:
        raise ValueError(f"unknown layout form {name!r}; registered forms: {', '.join(sorted(_FORMS))}") from None


def form_filling(fields: set[str]) -> FactorForm:
    """The registered form whose entries fill exactly the key ``fields`` (a layout that names no form)."""
    for form in _FORMS.values():
        if set(form.key_fields) == fields:
            return form
    known = "; ".join(f"{f.name}: {', '.join(f.key_fields)}" for f in _FORMS.values())
    raise ValueError(f"no layout form ships exactly the keys {sorted(fields)} (registered forms: {known})")


PAIR = register_factor_form(PairForm())
ABBA = register_factor_form(AbbaForm())
