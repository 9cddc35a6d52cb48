"""The registry of adapter kinds (``adapter.name``): how each wraps a model and what it trains.

Every kind is PEFT LoRA underneath, so the payload code is shared: what travels is the PEFT adapter
state minus the weights the kind declares frozen (``frozen_peft_weight_names``, see
``adapters.payload``).

========= ====================================== ============= ======================
name      paper                                  trains        frozen (sent once)
========= ====================================== ============= ======================
lora      Hu et al., arXiv 2106.09685            A, B (+head)  nothing
ffa       FFA-LoRA, arXiv 2403.12313             B (+head)     A
lora-sb   LoRA-SB, arXiv 2411.19557 (Fed-SB)     R (+head)     A, B
abba      ABBA, arXiv 2505.14238                 B1, A1, B2,   nothing
                                                 A2 (+head)
========= ====================================== ============= ======================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from adapters.abba.layer import configure_abba
from adapters.ffa import freeze_lora_a
from adapters.lora_sb.layer import configure_lora_sb
from adapters.payload import unwrap


def _unchanged_config(config: LoraConfig) -> LoraConfig:
    return config


def _no_finalize(model: Any) -> None:
    return None


@dataclass(frozen=True)
class AdapterKind:
    """One adapter kind.

    ``configure`` edits the PEFT ``LoraConfig`` before ``get_peft_model``; ``finalize`` runs on the
    wrapped model right after (inside the caller's seeded RNG fork). A kind that needs more of the
    ``AdapterSpec`` than the ``LoraConfig`` holds (ABBA's second rank) sets ``configure_spec``, which
    ``adapters.lora.lora_config`` calls as ``configure_spec(config, spec)`` instead.
    """

    name: str
    paper: str
    frozen: tuple[str, ...]
    configure: Callable[[LoraConfig], LoraConfig] = _unchanged_config
    finalize: Callable[[Any], None] = _no_finalize
    configure_spec: Callable[[LoraConfig, Any], LoraConfig] | None = None


_REGISTRY: dict[str, AdapterKind] = {}


def register_adapter_kind(kind: AdapterKind) -> AdapterKind:
    """Add ``kind`` to the registry; a name can be registered once."""
    if kind.name in _REGISTRY:
        raise ValueError(f"adapter kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def get_adapter_kind(name: str) -> AdapterKind:
    """The registered kind ``name``; an unknown name gets an error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"`adapter.name` = {name!r} is not an adapter kind; choose one of {', '.join(sorted(_REGISTRY))}"
        ) from None


register_adapter_kind(AdapterKind("lora", "arXiv 2106.09685", frozen=()))
register_adapter_kind(AdapterKind("ffa", "arXiv 2403.12313", frozen=("lora_A",), finalize=freeze_lora_a))
register_adapter_kind(
    AdapterKind("lora-sb", "arXiv 2411.19557", frozen=("lora_A", "lora_B"), configure=configure_lora_sb)
)
register_adapter_kind(
    AdapterKind(
        "abba",
        "arXiv 2505.14238",
        frozen=(),
        configure=lambda config: configure_abba(config, rank2=config.r),
        configure_spec=lambda config, spec: configure_abba(config, rank2=spec.ranks()[1]),
    )
)
ADAPTER_KINDS: tuple[str, ...] = tuple(_REGISTRY)  # the built-in kinds: ("lora", "ffa", "lora-sb", "abba")


def adapter_kind_of(model: Any) -> str:
    """The kind of an adapted model, read from its structure (works after an Opacus wrap too).

    LoRA-SB modules have ``lora_R``; ABBA modules ``lora_A2``; FFA-LoRA modules declare ``lora_A``
    frozen; plain LoRA modules declare nothing frozen. A model mixing kinds is rejected.
    """
    found = set()
    for module in unwrap(model).modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        frozen = tuple(sorted(module.frozen_peft_weight_names.get("default", ())))
        if "default" in getattr(module, "lora_R", {}):
            found.add("lora-sb")
        elif "default" in getattr(module, "lora_A2", {}):
            found.add("abba")
        else:
            plain = [k for k in _REGISTRY.values() if k.name not in ("lora-sb", "abba")]
            matches = [k.name for k in plain if tuple(sorted(k.frozen)) == frozen]
            found.add(matches[0] if matches else f"unknown (frozen {list(frozen)})")
    if len(found) != 1:
        raise ValueError(f"cannot tell the adapter kind of this model: its LoRA modules are {sorted(found) or 'none'}")
    return found.pop()
