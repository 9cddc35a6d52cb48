"""Installing the server's frozen adapter factors (FFA's A, Fed-SB's B and A) and checking them.

The server sends the factors once per node and their hash in every message. A node keeps them in
its Flower ``Context.state`` (a deployed node runs each message in a fresh process) and installs
them into the worker's model when the model holds something else; the hash is verified on receipt
and on every install, so a node never trains on factors other than the server's. A node without them
(a restarted SuperNode) raises :class:`FrozenFactorsMissing` and the server resends them.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, RecordDict

from adapters.frozen import hash_arrays, load_frozen_factors
from client.node_state import NodeStateMissing
from client.worker import Worker
from contract import CONFIG, FROZEN_FACTORS, FROZEN_HASH
from contract.frozen import FROZEN_CONFIRMED

STATE_FROZEN = "corolla.frozen-factors"
CONFIRMED = FROZEN_CONFIRMED  # reply metric: 1 once the node verified and installed the factors


class FrozenFactorsMissing(NodeStateMissing):
    """The server did not send the factors (it believes this node holds them), and the node has none."""


def sync_frozen(worker: Worker, content: RecordDict, context: Context) -> bool:
    """Install the frozen factors the message names; ``False`` if the strategy uses none."""
    config = content.config_records[CONFIG]
    if FROZEN_HASH not in config:
        return False
    expected = str(config[FROZEN_HASH])
    if worker.frozen_hash == expected:
        return True
    if FROZEN_FACTORS in content:
        arrays = {key: array.numpy() for key, array in content.array_records[FROZEN_FACTORS].items()}
        if hash_arrays(arrays) != expected:
            raise ValueError("the frozen adapter factors received do not match the hash the server sent; refusing to train")
        context.state[STATE_FROZEN] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    elif STATE_FROZEN in context.state:
        arrays = {key: array.numpy() for key, array in context.state.array_records[STATE_FROZEN].items()}
    else:
        raise FrozenFactorsMissing("this node holds no frozen adapter factors (a restart empties Context.state) and the server sent none")
    load_frozen_factors(worker.model, arrays, expected_hash=expected)
    worker.frozen_hash = expected
    return True
