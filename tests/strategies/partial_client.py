"""A numpy client for the partial-payload strategies (FedSA-LoRA, RoLoRA, FedSVD) on the FakeGrid.

It speaks the real client side of ``contract.factor_roles`` (``client.factor_roles.RoundFactors``):
completes the partial payload from its ``Context.state``, "trains" by adding a seeded delta to the
layers that are neither fixed nor absent, replies with the trimmed payload, and commits. What it
saw and trained each round is kept in :attr:`NumpyPartialClient.models` for exactness checks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict

from client.factor_roles import RoundFactors
from contract import ARRAYS, CONFIG, EVAL_LOSS, METRICS, NUM_EXAMPLES, SERVER_ROUND, TRAIN_LOSS, train_reply_content
from contract.factor_roles import in_layers
from tests.strategies.helpers import from_record, to_record


class NumpyPartialClient:
    """``handler(message, context)`` for :class:`~tests.strategies.fake_grid.FakeGrid`.

    Parameters
    ----------
    spec : Mapping[str, np.ndarray]
        Arrays with the whole adapter's keys, shapes and dtypes (e.g. the initial global arrays).
    num_examples : list[int]
        ``num-examples`` per partition id.
    fail : set[tuple[int, int]]
        ``(round, partition)`` pairs whose train message raises (an error reply).
    """

    def __init__(self, spec: Mapping[str, np.ndarray], num_examples: list[int], fail: set[tuple[int, int]] | None = None) -> None:
        self.spec = {k: (tuple(v.shape), v.dtype) for k, v in spec.items()}
        self.num_examples = num_examples
        self.fail = fail or set()
        # (round, partition) -> the whole adapter the client trained from and the one it trained to
        self.models: dict[tuple[int, int], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}

    def __call__(self, message: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        server_round = int(message.content[CONFIG][SERVER_ROUND])
        factors = RoundFactors.of(message.content, context)
        evaluating = message.metadata.message_type == MessageType.EVALUATE
        start = factors.complete_spec(from_record(message.content[ARRAYS]), self.spec, personal=not evaluating)
        if evaluating:
            metrics = {NUM_EXAMPLES: self.num_examples[pid], EVAL_LOSS: 0.0, **factors.reply_metrics()}
            factors.commit()
            return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=message)
        if (server_round, pid) in self.fail:
            raise RuntimeError(f"partition {pid} fails round {server_round}")
        rng = np.random.default_rng([server_round, pid])
        trained = {
            k: v if in_layers(k, factors.fixed) else (v + rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in start.items()
        }
        self.models[(server_round, pid)] = (start, trained)
        metrics = {TRAIN_LOSS: float(pid), **factors.reply_metrics()}
        reply = train_reply_content(to_record(factors.reply(trained)), self.num_examples[pid], metrics)
        factors.commit(trained)
        return Message(reply, reply_to=message)
