"""The declared shape of a GUIDEQ client report (``docs/tasks.md §3``, ``docs/trust.md §5``).

The server validates every report against :class:`GuideqReport` before merging: a lexicon is
``{label: [[ngram, weight, count], ...]}`` (``occlusion.to_json``), weights finite, counts whole.
A report that does not fit - a wrongly shaped lexicon, ``"explained": "abc"``, a NaN or overflowing
weight that would break the next round's broadcast - is skipped and counted, never merged.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_WEIGHT = 1e6
"""Largest |weight| of one n-gram: occlusion weights are probability drops summed over at most
``guideq.explain-examples`` texts, so honest weights stay far below it, and any sum of reports stays finite."""

_Label = Annotated[str, Field(strict=True, min_length=1, max_length=200)]
_Gram = Annotated[str, Field(strict=True, min_length=1, max_length=1000)]
_Weight = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_WEIGHT, le=MAX_WEIGHT)]
_Count = Annotated[int, Field(strict=True, ge=0, le=10**9)]


class GuideqReport(BaseModel):
    """One client's occlusion lexicon and how many texts it explained of those it examined."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lexicon: dict[_Label, list[tuple[_Gram, _Weight, _Count]]]
    explained: _Count
    examined: _Count
