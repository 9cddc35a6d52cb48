"""The base of every run-config section, and the value parsers sections share.

A section is the group of keys under one dotted head (``adapter.rank`` is the key ``rank`` of the
``adapter`` section). Python field names are snake_case; the keys users write are kebab-case, so
:class:`Section` aliases every field (``local_steps`` <-> ``local-steps``) and accepts both.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


def kebab(name: str) -> str:
    """``local_steps`` -> ``local-steps`` (the spelling of keys in ``pyproject.toml``)."""
    return name.replace("_", "-")


# Strict: no value changes type on the way in. Flower hands the apps TOML-typed values (``bool``,
# ``int``, ``float``, ``str``), so ``"8"`` is a string and stays one (an error for an int key), and
# ``"yes"`` is never ``True``. The one widening kept is int -> float (``train.lr = 1``): TOML writes
# a whole number without a point. inf and NaN are never a valid setting (docs/operations.md §1).
STRICT = ConfigDict(
    extra="forbid", frozen=True, alias_generator=kebab, populate_by_name=True, strict=True, allow_inf_nan=False
)


class Section(BaseModel):
    """One group of run-config keys: frozen, strict, finite, unknown keys rejected, kebab-case aliases.

    Every field needs a default (``pyproject.toml`` lists each key with it) and a ``description``
    (``corolla config`` prints it; error messages quote it). Values must be what Flower's run
    config can hold: ``bool``, ``int``, ``float`` or ``str``, and arrive with the declared type:
    no coercion between strings, numbers and booleans (an ``int`` is accepted for a ``float``), no
    inf or NaN. :func:`~contract.config.register_section` refuses a section that loosens this.
    """

    model_config = STRICT


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.01,0.25"`` -> ``(0.01, 0.25)``; every value must lie in (0, 1].

    Raises
    ------
    ValueError
        If ``text`` holds no value, a value that is not a number, or one outside (0, 1].
    """
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not 0 < v <= 1 for v in values):
        raise ValueError(f"needs comma-separated fractions in (0, 1], e.g. `0.5,0.9`; got {text!r}")
    return values
