"""Fed-SB: federated LoRA-SB, averaging only the small r×r matrix R, exactly.

Singhal et al., "Fed-SB: A Silver Bullet for Extreme Communication Efficiency and Performance in
(Private) Federated LoRA Fine-Tuning", arXiv 2502.15436, §3. Every client shares frozen
``B: (m, r)`` and ``A: (r, n)`` from the LoRA-SB initialisation (arXiv 2411.19557 §2.3) and trains
``R: (r, r)``; ``Σ p_i B R_i A == B (Σ p_i R_i) A``, so the weighted mean of the R's is the mean
of the clients' models (algorithms.md §3.2). Per round each client sends and receives ``M·r²``
values (+ head), independent of the number of clients; B and A travel once (``r·Σ(m+n)``) and are
booked as set-up traffic.
"""

from __future__ import annotations

from .ffa import FrozenFactorsStrategy
from .registry import register_strategy


@register_strategy("fedsb")
class FedSB(FrozenFactorsStrategy):
    """Fed-SB (arXiv 2502.15436): FedAvg of R (and the head) over frozen, shared B and A."""
