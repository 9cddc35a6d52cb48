"""One SecAgg+ round's parameters: share groups, threshold, quantiser and ring.

SecAgg+ (Bell et al., arXiv:2002.06287, §3.2) replaces SecAgg's complete graph by a sparse one:
each client shares its secrets with, and masks against, only its share group, here a ring
neighbourhood of ``k`` clients (itself included) over a random order of the sampled clients, as in
Flower's ``SecAggPlusWorkflow``. ``k = n`` gives the complete graph (Bonawitz et al., CCS 2017, IACR ePrint 2017/281).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from flwr.app import ConfigRecord

from contract import secagg as wire
from contract.secagg import Quantiser, SecAggConfig, VectorLayout, group_size, threshold_count


def share_groups(nodes: list[int], size: int) -> dict[int, list[int]]:
    """Node -> its share group (``size`` nodes including itself) on a randomly ordered ring.

    The order comes from the operating system's randomness (``random.SystemRandom``), so it does
    not disturb the global ``random`` state Flower samples nodes with.
    """
    order = sorted(nodes)
    random.SystemRandom().shuffle(order)
    n = len(order)
    if size >= n:
        return {node: sorted(order) for node in order}
    half = size // 2
    return {node: sorted({order[(i + offset) % n] for offset in range(-half, half + 1)}) for i, node in enumerate(order)}


@dataclass(frozen=True)
class RoundParams:
    """The parameters the set-up stage announces, plus the server-only share graph."""

    server_round: int
    threshold: int
    group: int
    quantiser: Quantiser
    modulus_bits: int
    layout: VectorLayout
    groups: dict[int, list[int]]

    @classmethod
    def plan(cls, config: SecAggConfig, *, server_round: int, nodes: list[int], layout: VectorLayout,
             weighted: bool) -> RoundParams:
        """Parameters for ``nodes`` sampled clients.

        Raises
        ------
        ValueError
            If the threshold exceeds the share group or the ring would overflow (naming the key).
        """
        group = group_size(config.num_shares, len(nodes))
        threshold = threshold_count(config.threshold, group)
        if threshold > group:
            raise ValueError(
                f"`secagg.threshold` = {config.threshold} needs {threshold} shares, but share groups have only "
                f"{group} clients ({len(nodes)} sampled); lower `secagg.threshold` or sample more clients"
            )
        quantiser = Quantiser(config.clip_range, config.quantization_bits, config.max_weight, weighted)
        return cls(
            server_round=server_round,
            threshold=threshold,
            group=group,
            quantiser=quantiser,
            modulus_bits=quantiser.modulus_bits(len(nodes)),
            layout=layout,
            groups=share_groups(nodes, group),
        )

    def setup_record(self) -> ConfigRecord:
        """What every client is told at set-up."""
        q = self.quantiser
        return ConfigRecord(
            {
                wire.ROUND: self.server_round,
                wire.THRESHOLD: self.threshold,
                wire.NUM_SHARES: self.group,
                wire.CLIP_RANGE: float(q.clip_range),
                wire.BITS: q.bits,
                wire.MODULUS_BITS: self.modulus_bits,
                wire.MAX_WEIGHT: q.max_weight,
                wire.WEIGHTED: q.weighted,
            }
        )
