"""``tokenswap.*``: the ``memorization`` task and its TokenSwap decoding defence (arXiv 2502.05159).

The keys set the auxiliary model and swap rule of TokenSwap (``client.tasks.tokenswap``), the
synthetic training text with its planted canaries, and the extraction probe each client runs on
its own shard during federated evaluation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contract.config import Section, register_section


class TokenSwapConfig(Section):
    """``tokenswap.*`` (read by the ``memorization`` task)."""

    aux_model: str = Field(
        "base", min_length=1,
        description="auxiliary model: `base` (the run's frozen base, adapter off), `tiny-llama`, `smollm2-135m` "
        "or a local HF folder; another vocabulary takes the re-tokenising path",
    )
    mode: Literal["mass-preserving", "naive"] = Field(
        "mass-preserving", description="swap rule on G: keep the main model's G mass (library) or replace and renormalise"
    )
    words: str = Field("", description="comma-separated grammar words G (empty: the built-in 110 function words)")
    eval_pairs: int = Field(16, ge=1, le=100_000, description="(prefix, suffix) pairs each client extracts from its own shard")
    prefix_tokens: int = Field(10, ge=1, le=8192, description="prompt length of an extraction pair, in tokens")
    suffix_tokens: int = Field(20, ge=1, le=8192, description="greedy continuation length compared with the true suffix")
    canaries: int = Field(20, ge=0, le=100_000, description="distinct planted canary sequences in the training pool")
    controls: int = Field(4, ge=0, le=100_000, description="of those, canaries with no grammar word in the suffix (TokenSwap cannot touch them)")
    canary_repeats: int = Field(10, ge=1, le=100_000, description="copies of each canary in the training pool")
    num_background: int = Field(2000, ge=1, le=10_000_000, description="background sentences in the training pool")
    num_test: int = Field(200, ge=1, le=10_000_000, description="held-out background sentences (plain and swapped perplexity)")

    @model_validator(mode="after")
    def _fits(self) -> TokenSwapConfig:
        if self.controls > self.canaries:
            raise ValueError(f"`tokenswap.controls` ({self.controls}) cannot exceed `tokenswap.canaries` ({self.canaries})")
        return self


register_section("tokenswap", TokenSwapConfig, owner="client.tasks.tokenswap")
