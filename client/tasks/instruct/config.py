"""``instruct.*``: the instruction-tuning task (``task.name = "instruct"``).

Only read when the task is ``instruct``. The defaults train on three reasoning-gym skills (the
``reasoning`` extra); point ``instruct.source`` at a file, a folder or an HF dataset id for your own
data. See :mod:`client.tasks.instruct` for what each stage does with these keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from contract.config import Section, register_section

DEFAULT_SOURCE = "reasoning-gym:basic_arithmetic,leg_counting,word_sorting"


class InstructConfig(Section):
    """``instruct.*``: data source and format, prompting, the held-out split and generation scoring."""

    source: str = Field(
        DEFAULT_SOURCE, min_length=1,
        description="a local .jsonl/.json/.csv/.parquet file or folder, an HF dataset id, or "
        "`reasoning-gym:<name>[,<name>...]` (needs the `reasoning` extra)",
    )
    format: Literal["auto", "alpaca", "chat", "prompt-completion"] = Field(
        "auto", description="row format: `alpaca` (instruction/input/output), `chat` (messages), "
        "`prompt-completion` (the two columns below), or `auto`: detected from the columns",
    )
    prompt_column: str = Field("prompt", min_length=1, description="prompt-completion: the prompt column")
    response_column: str = Field("completion", min_length=1, description="prompt-completion: the response column")
    label_column: str = Field(
        "", description="column the Dirichlet partitioner splits by; empty: the source name "
        "(reasoning-gym: the skill; a folder: the file)",
    )
    template: Literal["auto", "chat", "plain"] = Field(
        "auto", description="`chat`: the tokenizer's chat template, `plain`: the documented plain "
        "template, `auto`: chat when the tokenizer has one",
    )
    system_prompt: str = Field("", description="a system message put before every prompt (empty: none)")
    num_examples: int = Field(400, ge=2, le=10_000_000, description="reasoning-gym: examples generated per skill (train + test)")
    max_rows: int = Field(0, ge=0, le=1_000_000_000, description="files and HF datasets: use at most this many rows per split (0: all)")
    test_fraction: float = Field(
        0.1, gt=0, lt=1, description="held-out share per source when the source has no `test` split of its own",
    )
    max_new_tokens: int = Field(32, ge=1, le=4096, description="generation budget per evaluated prompt")
    generate_examples: int = Field(
        64, ge=0, le=10_000_000, description="test rows scored by greedy generation per evaluation (0: all; loss uses every row)",
    )
    samples: int = Field(4, ge=0, le=10_000, description="sample generations written to the run folder per round")

    @field_validator("source")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a file, a folder, an HF dataset id or `reasoning-gym:<name>`")
        return value


register_section("instruct", InstructConfig, owner="client.tasks.instruct")
