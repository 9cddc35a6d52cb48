"""The shape of a strategy's communication formula (what ``corolla comm`` tabulates).

Every registered strategy declares, in its :class:`~strategies.registry.StrategyInfo`, how many
parameters one client uploads and downloads per round and once per run, given the adapted modules'
shapes and the rank (``docs/communication.md``). The formulas live next to each strategy; the model
shape tables and the report are :mod:`simulations.comm`.

Notation: ``Σ`` runs over the adapted modules with shapes ``(m, n)`` (``nn.Linear`` orientation),
``M`` is their count, ``r`` the rank and ``K`` the clients aggregated in a round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple


class CommCost(NamedTuple):
    """Parameters per client per round (upload, download) and once per run (one_time)."""

    upload: int
    download: int
    one_time: int


@dataclass(frozen=True)
class CommInputs:
    """What every communication formula is given.

    Attributes
    ----------
    shapes : tuple[tuple[int, int], ...]
        ``(m, n)`` of each adapted module.
    rank : int
        The adapter rank ``r`` (Fed-SB: the latent size).
    clients : int
        ``K``, the clients aggregated per round (FLoRA and FedEx-LoRA downloads grow with it).
    """

    shapes: tuple[tuple[int, int], ...]
    rank: int
    clients: int = 1

    def __post_init__(self) -> None:
        """Reject shapes and counts no model has."""
        if not self.shapes or any(m <= 0 or n <= 0 for m, n in self.shapes):
            raise ValueError(f"need at least one module with positive (m, n), got {list(self.shapes[:3])}...")
        if self.rank <= 0 or self.clients <= 0:
            raise ValueError(f"need rank > 0 and clients > 0; got rank={self.rank}, clients={self.clients}")

    @classmethod
    def of(
        cls, shapes: Mapping[str, tuple[int, int]] | Iterable[tuple[int, int]], rank: int, clients: int = 1
    ) -> CommInputs:
        """Build from a ``{module: (m, n)}`` mapping or an iterable of ``(m, n)``."""
        dims = shapes.values() if isinstance(shapes, Mapping) else shapes
        return cls(tuple((int(m), int(n)) for m, n in dims), int(rank), int(clients))

    @property
    def modules(self) -> int:
        """``M``."""
        return len(self.shapes)

    @property
    def sum_m(self) -> int:
        """``Σ m``."""
        return sum(m for m, _ in self.shapes)

    @property
    def sum_n(self) -> int:
        """``Σ n``."""
        return sum(n for _, n in self.shapes)

    @property
    def sum_mn(self) -> int:
        """``Σ m·n``: every adapted weight (full fine-tuning)."""
        return sum(m * n for m, n in self.shapes)

    @property
    def lora_factors(self) -> int:
        """``r·Σ(m+n)``: one client's LoRA ``A`` and ``B`` for every module."""
        return self.rank * (self.sum_m + self.sum_n)


CommFormula = Callable[..., CommCost]
"""``formula(inputs: CommInputs, **options) -> CommCost``; the options are the strategy's own
keywords (e.g. FedEx-LoRA's ``residual`` form), and unknown ones raise ``TypeError``."""


def factor_average_comm(inputs: CommInputs) -> CommCost:
    """FedIT: every client sends and receives its ``A`` and ``B``, ``r·Σ(m+n)`` each way."""
    return CommCost(inputs.lora_factors, inputs.lora_factors, 0)
