"""Flat dotted keys -> a validated :class:`~.run_config.RunConfig`, with errors that say the fix.

Every error names the key as the user writes it, the value received, what is allowed and how to
fix it, and all errors are reported together.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from .registry import run_config_model
from .run_config import RunConfig
from .section import Section


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message lists every problem and its fix."""


def default_run_config() -> RunConfig:
    """Every key at its default (core and registered sections)."""
    return run_config_model()()


def allowed_keys() -> list[str]:
    """Every key a user may set, in dotted kebab-case (core and registered sections)."""
    return sorted(default_run_config().to_flat())


def describe_key(key: str) -> str:
    """The ``description`` of a dotted key (``""`` when the key is unknown)."""
    field = _field_for(key)
    return (field.description or "") if field is not None else ""


def parse_run_config(flat: Mapping[str, Any], *, partial: bool = False) -> RunConfig:
    """Validate Flower's flat run config into a :class:`RunConfig`.

    Parameters
    ----------
    flat : Mapping
        ``{"adapter.rank": 8, "num-server-rounds": 3, ...}``; missing keys take their defaults.
    partial : bool
        Skip keys whose section head (``head`` of ``head.key``) is not registered in this process.
        The ClientApp passes ``True``: it never imports strategies, and the ServerApp validated every
        key before any client got a message. Everything else validates all keys.

    Raises
    ------
    ConfigError
        Listing every unknown key, wrong type and impossible value, each with its fix.
    """
    model = run_config_model()
    sections = _section_heads(model)
    known = set(default_run_config().to_flat())
    nested: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in flat.items():
        head, dot, tail = key.partition(".")
        if dot and partial and head not in sections:
            continue
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            problems.append(
                f"unknown config key `{key}` (value {value!r}).{hint} Allowed keys: {', '.join(sorted(known))}."
            )
            continue
        if dot and head in sections:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[key] = value
    config = None
    try:
        config = model.model_validate(nested)
    except ValidationError as exc:
        problems += [_describe(err, flat, alternatives) for err, alternatives in _merge_union_errors(exc.errors(), flat)]
    if problems:
        raise ConfigError("invalid Corolla run config:\n  - " + "\n  - ".join(problems))
    assert config is not None
    return config


def _section_heads(model: type[RunConfig]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items() if _section_of(field) is not None}


def _section_of(field: FieldInfo) -> type[Section] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def _merge_union_errors(
    errors: list[Any], flat: Mapping[str, Any]
) -> list[tuple[Mapping[str, Any], list[str]]]:
    """One error per key: pydantic reports a value that fits no member of a union (``train.lr``: a number
    or ``"auto"``) once per member, under locations such as ``train.lr.constrained-float``; keep the first
    member's error at the user's key and the others' messages as alternatives."""
    merged: dict[str, tuple[dict[str, Any], list[str]]] = {}
    out: list[tuple[Mapping[str, Any], list[str]]] = []
    for err in errors:
        loc = [str(p) for p in err["loc"] if p != "__root__"]
        prefix = next((n for n in range(len(loc), 0, -1) if ".".join(loc[:n]) in flat), len(loc))
        if prefix == len(loc):
            out.append((err, []))
            continue
        key = ".".join(loc[:prefix])
        if key in merged:
            merged[key][1].append(str(err["msg"]).removeprefix("Input should be "))
        else:
            merged[key] = ({**err, "loc": tuple(loc[:prefix])}, [])
            out.append(merged[key])
    return out


def _describe(error: Mapping[str, Any], flat: Mapping[str, Any], alternatives: list[str] | None = None) -> str:
    key = ".".join(str(p) for p in error["loc"] if p != "__root__")
    value = flat.get(key, error.get("input"))
    description = describe_key(key)
    meaning = f" ({key}: {description})" if description else ""
    if not key:
        return f"{error['msg'].removeprefix('Value error, ')}."
    message = str(error["msg"]).removeprefix("Value error, ")
    kind = str(error.get("type"))
    if kind in _TYPE_HINTS:  # strict types: say what was received and how to write what is expected
        message = f"{message} ({type(value).__name__} given; no conversion is made: {_TYPE_HINTS[kind].format(key=key)})"
    elif kind == "finite_number":
        message = f"{message} (inf and nan are never valid settings)"
    if alternatives:
        message = f"{message}; or {' or '.join(alternatives)}"
    return f"`{key}` = {value!r}: {message}{meaning}. Fix it in [tool.flwr.app.config] or with --run-config '{key}=...'."


# Pydantic's strict-type error codes -> how the value is written in TOML (``--run-config`` is TOML).
_TYPE_HINTS = {
    "int_type": "write a whole number without quotes, e.g. {key}=8",
    "float_type": "write a number without quotes, e.g. {key}=0.5",
    "bool_type": "write true or false without quotes, e.g. {key}=true",
    "string_type": 'write text in double quotes, e.g. {key}="text"',
}


def _field_for(key: str) -> FieldInfo | None:
    model: type[Section] = run_config_model()
    field = None
    for part in key.split("."):
        field = model.model_fields.get(part.replace("-", "_"))
        if field is None:
            return None
        section = _section_of(field)
        if section is not None:
            model = section
    return field
