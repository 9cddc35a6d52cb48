"""Plain LoRA (arXiv 2106.09685), the ``lora`` adapter kind; registered on import."""

from adapters.plain_lora.kind import PAIR, PlainLora, pair_projected, pair_update

__all__ = ["PAIR", "PlainLora", "pair_projected", "pair_update"]
