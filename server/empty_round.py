"""A round that aggregated no reply: the run goes on from the previous model, unless nothing has trained.

Every train reply of a round can be lost: each client errored (a DP client refusing its δ, a
crash), sent something the strategy dropped, or missed ``round-timeout``; under SecAgg+ too few
clients survived to decode the sum (``docs/algorithms.md §12``). Such a round leaves the global
model as it was. The rule (``docs/operations.md §2``):

- if no round of the run has aggregated a reply yet (the first rounds of a run, a resumed run's
  checkpoint rows included), the run **fails** at that round, with the drop reasons: every client
  failing from the start is a set-up problem, and a run that "completes" without ever training
  only hides it (and ``corolla run`` exits non-zero because Flower marks the run failed);
- once some round has trained, an empty round is logged as a warning, counted in
  ``summary.json`` (``rounds_without_replies``), and the run goes on from the previous model,
  as a SecAgg+ round below its threshold always has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from logging import WARNING
from typing import Any

from flwr.common.logger import log

from strategies.protocol import DroppedReply

_MAX_REASONS = 5  # distinct drop reasons quoted in the error (the log has every one, tracebacks included)
_MAX_REASON_CHARS = 200


class NoReplyAggregated(RuntimeError):
    """The run's rounds so far aggregated no reply at all: nothing ever trained."""


def is_empty(row: Mapping[str, Any]) -> bool:
    """Whether a recorded round (1, 2, ...) aggregated no train reply."""
    return int(row.get("round", 0)) > 0 and int(row.get("clients", 0)) == 0


def check_round(row: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]], dropped: Sequence[DroppedReply]) -> None:
    """Apply the rule above to the round just recorded as ``row``; ``earlier`` are the rows before it.

    Raises
    ------
    NoReplyAggregated
        ``row`` aggregated no reply and neither did any earlier round.
    """
    if not is_empty(row):
        return
    rnd = int(row["round"])
    what = _describe(row, dropped)
    if any(int(r.get("round", 0)) > 0 and int(r.get("clients", 0)) > 0 for r in earlier):
        log(WARNING, "Round %d aggregated no reply (%s); the global model stays as it was and the run goes on", rnd, what)
        return
    raise NoReplyAggregated(
        f"round {rnd} aggregated no reply ({what}) and no earlier round of this run trained either, so the run stops "
        "instead of finishing untrained. Common causes: every client raising (see the clients' log), a `privacy.*` "
        "setting every client refuses, a `round-timeout` shorter than a round takes, or too few SecAgg+ survivors"
    )


def _describe(row: Mapping[str, Any], dropped: Sequence[DroppedReply]) -> str:
    parts = [f"{int(row.get('dropped', 0))} dropped", f"{int(row.get('timed_out', 0))} timed out"]
    reasons = Counter(_first_line(reply.reason) for reply in dropped)
    if reasons:
        quoted = [f"{count}x {reason!r}" for reason, count in reasons.most_common(_MAX_REASONS)]
        more = len(reasons) - _MAX_REASONS
        parts.append("reasons: " + "; ".join(quoted) + (f"; and {more} more" if more > 0 else ""))
    return ", ".join(parts)


def _first_line(reason: str) -> str:
    line = reason.strip().splitlines()[0] if reason.strip() else "no reason given"
    return line if len(line) <= _MAX_REASON_CHARS else line[: _MAX_REASON_CHARS - 3] + "..."
