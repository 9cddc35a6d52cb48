"""GUIDEQ's declared report schema: what an honest client writes passes, what broke the merge does not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from client.tasks.guideq import occlusion
from client.tasks.guideq.report import GuideqReport

HONEST = {"lexicon": occlusion.to_json({"sport": {"goal": (1.5, 3), "the match": (0.25, 1)}, "tech": {}}),
          "explained": 4, "examined": 6}


def test_an_honest_report_passes_as_json_travels() -> None:
    GuideqReport.model_validate(json.loads(json.dumps(HONEST)))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"lexicon": {"sport": {"goal": 1}}}, "lexicon.sport"),
        ({"lexicon": {"sport": [["goal", 1.5]]}}, "lexicon.sport.0"),
        ({"lexicon": {"sport": [["goal", "1.5", 3]]}}, "lexicon.sport.0.1"),
        ({"lexicon": {"sport": [["goal", float("nan"), 3]]}}, "lexicon.sport.0.1"),
        ({"lexicon": {"sport": [["goal", float("inf"), 3]]}}, "lexicon.sport.0.1"),
        ({"lexicon": {"sport": [["goal", 1e300, 3]]}}, "lexicon.sport.0.1"),
        ({"lexicon": {"sport": [["goal", 1.0, -1]]}}, "lexicon.sport.0.2"),
        ({"lexicon": {"sport": [[7, 1.0, 1]]}}, "lexicon.sport.0.0"),
        ({"explained": "abc"}, "explained"),
        ({"explained": True}, "explained"),
        ({"extra": 1}, "extra"),
    ],
)
def test_what_broke_the_merge_is_refused_naming_the_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        GuideqReport.model_validate({**HONEST, **change})
    assert where in str(info.value)
