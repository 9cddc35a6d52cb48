"""``structformer.*``: structure-aware MLM pre-training (``task.name = "structformer"``; arXiv 2411.16618).

Only read when the task is ``structformer``; pair it with a masked-LM ``model.name``
(``tiny-longformer`` on CPU, a local Longformer checkpoint on a GPU).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.config import Section, register_section


class StructFormerConfig(Section):
    """``structformer.*``: the documents, the global-attention policy and the masking."""

    structure: bool = Field(True, description="global attention on headings; false: the text-only ablation")
    global_policy: Literal["all", "first", "marker"] = Field(
        "all", description="global tokens: `all` heading tokens (paper), the `first` of each, or a `marker` <sec>"
    )
    mask_prob: float = Field(0.15, ge=0.0, le=1.0, description="share of words masked (whole-word, 80/10/10)")
    never_mask_global: bool = Field(False, description="never mask heading/title words")
    docs_path: str = Field("", description="folder of .md/.tex/.json documents; empty: synthetic slot documents")
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of `docs-path` documents held out")
    num_train: int = Field(512, ge=2, le=10_000_000, description="slot documents: training pool size")
    num_test: int = Field(128, ge=1, le=10_000_000, description="slot documents: test split size")
    body_length: int = Field(200, ge=35, le=4000, description="slot documents: filler words per body")


register_section("structformer", StructFormerConfig, owner="client.tasks.structformer")
