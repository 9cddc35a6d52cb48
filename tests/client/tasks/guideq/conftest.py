"""A GUIDEQ task on the synthetic set and a small classifier trained on it, shared by the tests.

The classifier is a mean-of-embeddings bag of words (any ``model(input_ids, attention_mask) ->
logits`` serves the task): its decisions are additive in the words, so the planted signature words
are the ground truth occlusion must recover. A from-scratch tiny BERT classifies the set as well
but its occlusion importances are dominated by position noise at this size, which would test the
model, not the pipeline. The federated test uses the real ``minilm-l6`` + LoRA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from client.tasks.guideq.task import GuidedClassification
from tests.client.tasks.conftest import minilm_dir


class BagOfWords(torch.nn.Module):
    """``logits = W · mean(E[tokens]) + b`` over the unpadded tokens."""

    def __init__(self, vocab: int, num_labels: int, dim: int = 32) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, dim)
        return self.out(pooled)  # (B, K)


@pytest.fixture(scope="session")
def gq_tokenizer():
    return AutoTokenizer.from_pretrained(str(minilm_dir()))


@pytest.fixture(scope="session")
def gq_task() -> GuidedClassification:
    return GuidedClassification(seed=0, max_length=96)


@pytest.fixture(scope="session")
def gq_data(gq_task):
    ds = gq_task.build_datasets()
    return ds["train"].to_list(), ds["test"].to_list()


@pytest.fixture(scope="session")
def gq_model(gq_task, gq_tokenizer, gq_data) -> BagOfWords:
    rows, _ = gq_data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BagOfWords(len(gq_tokenizer), gq_task.num_labels)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(150):
        batch = gq_task.collate(gq_tokenizer, [rows[i] for i in rng.choice(len(rows), 32, replace=False)])
        loss = gq_task.example_losses(model, batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
