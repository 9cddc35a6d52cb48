"""HetLoRA and FlexLoRA at the strategy level: the global adapter at the largest rank, components no client
filled restart trainable, and the per-node payloads are truncations (docs/algorithms.md §18-§20)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from strategies.client_ranks import ClientRanks
from strategies.flexlora import FlexLoRA
from strategies.hetlora import HetLoRA
from strategies.layout import LoraPair
from strategies.mixed_ranks import MixedRanks

M, N, ALPHA = 12, 10, 8.0
LAYOUT = {"q": LoraPair("q.lora_A.weight", "q.lora_B.weight", ALPHA / 8)}


def client(rank: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"q.lora_A.weight": rng.normal(size=(rank, N)).astype(np.float32),
            "q.lora_B.weight": rng.normal(size=(M, rank)).astype(np.float32)}


@pytest.mark.parametrize("cls", [HetLoRA, FlexLoRA])
def test_components_no_client_filled_restart_with_a_fresh_a_row(cls: type) -> None:
    ranks = ClientRanks((2, 8), ALPHA)
    strategy = cls(layout=LAYOUT, client_ranks=ranks, seed=3)
    strategy.global_arrays = ArrayRecord({k: Array(np.zeros(v.shape, np.float32)) for k, v in client(8, 0).items()})
    out = strategy.aggregate_arrays(1, [client(2, 1), client(2, 2)], np.array([0.5, 0.5]))  # only rank-2 clients
    a, b = out["q.lora_A.weight"], out["q.lora_B.weight"]
    assert a.shape == (8, N) and b.shape == (M, 8)
    assert np.all(b[:, 4:] == 0) and np.all(np.abs(a[4:]).sum(axis=1) > 0)  # B = 0 there, A fresh: trainable, adds nothing
    assert np.all(np.abs(b[:, :2]).sum(axis=0) > 0)


def test_each_node_is_sent_a_truncation_cut_from_the_current_global_record() -> None:
    ranks = ClientRanks((2, 8), ALPHA, by_node={1: 2, 2: 8})
    mixed = MixedRanks(ranks, LAYOUT, strategy="hetlora")
    first = ArrayRecord({k: Array(v) for k, v in client(8, 5).items()})
    second = ArrayRecord({k: Array(v) for k, v in client(8, 6).items()})
    small = mixed.payload(first, 1)
    assert small["q.lora_A.weight"].shape == (2, N) and mixed.payload(first, 2) is first
    again = mixed.payload(second, 1)  # a new round's record: never the previous round's cut
    np.testing.assert_array_equal(again["q.lora_B.weight"].numpy(), client(8, 6)["q.lora_B.weight"][:, :2])
    with pytest.raises(KeyError):
        mixed.payload(first, 99)
