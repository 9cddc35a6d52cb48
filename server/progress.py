"""Live progress within a round: clients done / asked, bytes so far, the latest metric.

:class:`ProgressGrid` wraps the run's Flower ``Grid``; its ``send_and_receive`` is Flower's own
push-then-poll loop (``InMemoryGrid.send_and_receive``) with a progress report on every poll that
brought replies, at most every ``interval`` seconds plus once when the phase completes. On a terminal
it is a tqdm bar; in a log stream (``flwr run --stream``, CI) it is one plain line per update, since
carriage-return redraws turn into noise there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from flwr.app import Message
from flwr.serverapp import Grid

from contract import CONFIG, SERVER_ROUND

_POLL_S = 0.1


class ProgressGrid(Grid):
    """Delegate everything to ``inner``; report progress while waiting for replies.

    ``status()`` returns the tail of each line (e.g. ``"12.3 MB so far, eval_accuracy 0.84"``).
    """

    def __init__(
        self, inner: Grid, *, num_rounds: int, status: Callable[[], str], interval: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.inner = inner
        self.num_rounds = num_rounds
        self.status = status
        self.interval = interval
        self.stream = stream or sys.stdout

    # --- delegation (the Grid API) ----------------------------------------------------------------
    def set_run(self, run: Any) -> None:  # noqa: D102 - Grid API
        self.inner.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102 - Grid API
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # noqa: D102 - Grid API
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102 - Grid API
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102 - Grid API
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102 - Grid API
        return self.inner.pull_messages(message_ids)

    # --- the loop ---------------------------------------------------------------------------------
    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply is in or ``timeout`` passed, reporting progress."""
        messages = list(messages)
        label = _label(messages)
        pending = set(self.inner.push_messages(messages))
        total = len(pending)
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        bar = self._bar(label, total)
        last = 0.0
        while pending and (timeout is None or time.time() < end):
            got = list(self.inner.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if got and (not pending or time.time() - last >= self.interval):
                last = time.time()
                self._report(bar, label, len(replies), total)
            if pending:
                time.sleep(_POLL_S)
        if bar is not None:
            bar.close()
        return replies

    def _bar(self, label: str, total: int) -> Any:
        if total == 0 or not self.stream.isatty():
            return None
        from tqdm import tqdm  # noqa: PLC0415 - only on a terminal

        return tqdm(total=total, desc=label, unit="client", file=self.stream, leave=False)

    def _report(self, bar: Any, label: str, done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)
            bar.set_postfix_str(self.status())
            return
        print(f"{label}: {done}/{total} clients replied, {self.status()}", file=self.stream, flush=True)


def _label(messages: list[Message]) -> str:
    if not messages:
        return "idle"
    first = messages[0]
    phase = first.metadata.message_type
    config = first.content.config_records.get(CONFIG)
    rnd = config.get(SERVER_ROUND) if config is not None else None
    return f"round {rnd} {phase}" if isinstance(rnd, int) else phase
