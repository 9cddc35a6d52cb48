"""Which LoRA rank each node trains, as the server knows it (per-client ranks, ``docs/algorithms.md §18``).

The ServerApp fills :attr:`ClientRanks.by_node` from its rank census (``server.rank_census``) before a
node is first sent anything; a strategy that takes mixed ranks reads it to send every node its adapter
at its own rank and to check each reply against that rank. Plain data, no Flower.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClientRanks:
    """The run's configured ranks (``adapter.ranks``) and the rank of every node seen so far.

    ``scale_alpha`` is LoRA's ``α``: a rank-``r`` client's scale is ``α / r``.
    """

    ranks: tuple[int, ...]
    alpha: float
    by_node: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an empty or non-positive rank list."""
        if not self.ranks or any(r < 1 for r in self.ranks):
            raise ValueError(f"ClientRanks needs positive ranks, got {self.ranks}")

    @property
    def r_min(self) -> int:
        """The smallest configured rank."""
        return min(self.ranks)

    @property
    def r_max(self) -> int:
        """The largest configured rank (the server's global adapter has it)."""
        return max(self.ranks)

    def scale(self, rank: int) -> float:
        """The LoRA scale of a rank-``rank`` adapter, ``α / r``."""
        return self.alpha / rank

    def of(self, node_id: int) -> int | None:
        """The rank node ``node_id`` trains (``None``: not in the census yet)."""
        return self.by_node.get(node_id)

    def record(self, node_id: int, rank: int) -> None:
        """Note a node's rank; a rank not among the configured ones is refused."""
        if rank not in self.ranks:
            raise ValueError(f"node {node_id} reports rank {rank}, not one of adapter.ranks = {self.ranks}")
        self.by_node[node_id] = rank

    def prune(self, node_id: int, rank: int) -> bool:
        """Note that a node now trains the smaller ``rank`` (HetLoRA's self-pruning, ``docs/algorithms.md §19``);
        True if it changed. A rank above the node's, below 1, or for a node not in the census is refused."""
        current = self.of(node_id)
        if current is None or not 1 <= rank <= current:
            raise ValueError(f"node {node_id} cannot move from rank {current} to rank {rank}: only a smaller rank is accepted")
        self.by_node[node_id] = rank
        return rank != current

    def mean(self) -> float:
        """The mean rank over the nodes of the census (0.0 before the census)."""
        return sum(self.by_node.values()) / len(self.by_node) if self.by_node else 0.0
