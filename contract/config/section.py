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


class Section(BaseModel):
    """One group of run-config keys: frozen, unknown keys rejected, kebab-case aliases.

    Every field needs a default (``pyproject.toml`` lists each key with it) and a ``description``
    (``corolla config`` prints it; error messages quote it). Values must be what Flower's run
    config can hold: ``bool``, ``int``, ``float`` or ``str``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=kebab, populate_by_name=True)


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
