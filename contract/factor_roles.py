"""The factor-roles part of the message contract: which LoRA factors travel, train and stay home.

Some strategies ship only part of the adapter (``docs/algorithms.md §13``-``§16``):

- FedSA-LoRA keeps every client's ``B`` on the client (:data:`LOCAL_LAYERS` = ``"lora_B"``): the server
  never sends it, the client never returns it, and the client keeps its own ``B`` in
  ``Context.state`` from round to round.
- RoLoRA trains one half per round and FedSVD trains only ``B`` (:data:`FIXED_LAYERS`): the client
  trains with those layers frozen and its reply leaves them out (the server holds them).
- RoLoRA sends a node only the arrays that changed since the global adapter the node already holds
  (:data:`GLOBAL_VERSION`, :data:`GLOBAL_FROM_VERSION`): the node keeps its copy of the global
  adapter in ``Context.state`` and reports the version it holds in every reply (metric
  :data:`GLOBAL_VERSION`).

Layer names are PEFT's (``lora_A``, ``lora_B``), comma-separated; a payload key belongs to layer
``L`` when it contains ``".L."`` (``...q_proj.lora_B.weight``). A message without these keys ships
the whole adapter, as every other strategy does.
"""

from __future__ import annotations

from collections.abc import Iterable

LOCAL_LAYERS = "local-layers"
"""Config key: PEFT layers each client keeps for itself (neither sent nor returned)."""

FIXED_LAYERS = "fixed-layers"
"""Config key: PEFT layers sent but not trained this round, and left out of the reply."""

GLOBAL_VERSION = "global-version"
"""Config key: the version of the global adapter this message brings the node to; reply metric: the
version the node now holds."""

GLOBAL_FROM_VERSION = "global-from-version"
"""Config key: the message's arrays are only those changed since this version, which the node holds."""


def encode_layers(layers: Iterable[str]) -> str:
    """``("lora_A", "lora_B")`` -> ``"lora_A,lora_B"`` (sorted, no duplicates)."""
    names = sorted(set(layers))
    bad = [name for name in names if not name.startswith("lora_") or "," in name or "." in name]
    if bad:
        raise ValueError(f"factor layer names must be PEFT adapter layers like 'lora_B', got {bad}")
    return ",".join(names)


def decode_layers(value: object) -> tuple[str, ...]:
    """Inverse of :func:`encode_layers`; an absent or empty value is no layer."""
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        raise ValueError(f"factor layers must be a comma-separated string, got {value!r}")
    return tuple(name for name in value.split(",") if name)


def in_layers(key: str, layers: Iterable[str]) -> bool:
    """Whether payload ``key`` belongs to one of ``layers`` (``"...proj.lora_B.weight"`` and ``"lora_B"``)."""
    return any(f".{layer}." in key for layer in layers)
