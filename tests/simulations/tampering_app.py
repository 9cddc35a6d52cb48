"""A ClientApp that wraps Corolla's own and tampers with its real replies (``docs/trust.md §6``).

Used by ``tests/simulations/test_flwr_run.py`` through ``flwr run`` on the Ray engine: partitions 0
and 1 reply honestly; partition 2 sets its ``partition-id`` metric to NaN (which ended the whole run
before) and partition 3 replaces its first array by 3e38 everywhere (finite, but it made FedEx-LoRA's
base delta inf). Evaluate messages pass through untouched.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp

from client.app import app as corolla
from contract import ARRAYS, METRICS, PARTITION_ID

app = ClientApp()


def _tamper(reply: Message, partition: int) -> Message:
    if not reply.has_content():
        return reply
    if partition == 2:
        reply.content[METRICS][PARTITION_ID] = math.nan
    elif partition == 3:
        record = reply.content[ARRAYS]
        key = next(iter(record))
        record[key] = Array(np.full_like(record[key].numpy(), 3e38))
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Corolla's train reply, tampered with on partitions 2 and 3."""
    return _tamper(corolla(msg, context), int(context.node_config["partition-id"]))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Corolla's evaluate reply, untouched."""
    return corolla(msg, context)
