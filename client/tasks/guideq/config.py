"""``guideq.*``: the GUIDEQ guided-questioning task (``task.name = "guideq"``; arXiv 2411.05991).

Only read when the task is ``guideq``; every key has a CPU-friendly default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contract.config import Section, register_section


class GuideqConfig(Section):
    """``guideq.*``: data, occlusion explanations, the keyword lexicon and the guided evaluation."""

    train_file: str = Field("", description="labelled JSONL/CSV training pool; empty: the seeded synthetic set")
    test_file: str = Field("", description="labelled JSONL/CSV test split (needed with `train-file`)")
    text_column: str = Field("text", min_length=1, description="text column of the user's files")
    label_column: str = Field("label", min_length=1, description="label column of the user's files")
    num_labels: int = Field(4, ge=4, le=6, description="synthetic set: number of labels (4 to 6)")
    num_train: int = Field(800, ge=8, le=10_000_000, description="synthetic set: training pool size")
    num_test: int = Field(200, ge=4, le=10_000_000, description="synthetic set: test split size")
    report: bool = Field(True, description="clients send occlusion keyword lexica after training")
    explain_examples: int = Field(32, ge=1, le=100_000, description="client examples explained per round (correct ones count)")
    occlusion: Literal["span", "all"] = Field(
        "span", description="`span`: mask each occurrence with the mask token; `all`: every occurrence, upstream"
    )
    max_ngram: int = Field(1, ge=1, le=3, description="occlude word n-grams up to this n")
    aggregation: Literal["sum", "max"] = Field("sum", description="per-label keyword weight: `sum` or `max`")
    min_count: int = Field(1, ge=1, le=1_000_000, description="clients send only n-grams kept in at least this many samples")
    lexicon_size: int = Field(15, ge=1, le=10_000, description="keywords per label in the broadcast global lexicon")
    questioner: Literal["template", "llm"] = Field("template", description="`template` (deterministic) or `llm`")
    questioner_model: str = Field(
        "smollm2-135m", min_length=1, description="causal LM for `questioner = llm` (built-in name or local path)"
    )
    answerer: Literal["overlap", "qa"] = Field(
        "overlap", description="`overlap` (best-matching hidden sentence) or `qa` (extractive QA model)"
    )
    answerer_model: str = Field("", description="local extractive-QA model directory for `answerer = qa`")
    keywords_per_label: int = Field(3, ge=1, le=1_000, description="template questioner: keywords asked per candidate label")
    turns: int = Field(1, ge=1, le=5, description="question/answer turns per text")

    @model_validator(mode="after")
    def _check_pairs(self) -> GuideqConfig:
        if bool(self.train_file) != bool(self.test_file):
            raise ValueError("`guideq.train-file` and `guideq.test-file` must be set together (or both left empty)")
        if self.answerer == "qa" and not self.answerer_model:
            raise ValueError("`guideq.answerer = qa` needs `guideq.answerer-model` = a local extractive-QA model folder")
        return self


register_section("guideq", GuideqConfig, owner="client.tasks.guideq")
