"""The server's edge of ``adapter.wire-dtype``: payloads leave in the wire dtype and arrive as float32.

``WireCodec`` wraps the plugin relay (inside the meter, which so counts the wire bytes). Going
down, every message's ``arrays`` record is encoded (``contract.wire``); coming up, every reply's is
decoded to float32 before the relay and the strategy see it, so strategies, validation and plugins
only ever handle float32 values, exactly the values that travelled. The new global arrays are
rounded to the wire dtype before they leave the round, so central evaluation, checkpoints and the
export hold what the clients will receive (``docs/precision.md §5``). With ``float32`` it is a
pass-through.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from contract import ARRAYS
from contract.wire import decode_record, encode_record, round_to_wire
from server.plugin_relay import PluginRelay
from server.strategy_wrapper import StrategyWrapper


class WireCodec(StrategyWrapper[PluginRelay]):
    """Encode payloads going down, decode replies coming up (module docstring)."""

    wraps = PluginRelay

    def __init__(self, relay: PluginRelay, *, wire_dtype: str = "float32") -> None:
        super().__init__(relay)
        self.wire_dtype = wire_dtype

    def _encode(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        if self.wire_dtype != "float32":
            for msg in messages:
                if msg.has_content() and ARRAYS in msg.content.array_records:
                    record = msg.content.array_records[ARRAYS]
                    msg.content[ARRAYS] = encode_record({k: a.numpy() for k, a in record.items()}, self.wire_dtype)
        return messages

    def _decode(self, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        if self.wire_dtype != "float32":
            for reply in replies:
                if reply.has_content() and ARRAYS in reply.content.array_records:
                    reply.content[ARRAYS] = decode_record(reply.content.array_records[ARRAYS], self.wire_dtype)
        return replies

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate, then encode the payloads."""
        return self._encode(self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode the replies, delegate, and round the new global to what the wire will carry."""
        arrays, metrics = self.inner.aggregate_train(server_round, self._decode(replies))
        if arrays is not None and self.wire_dtype != "float32":
            rounded = round_to_wire({k: a.numpy() for k, a in arrays.items()}, self.wire_dtype)
            arrays = ArrayRecord({k: Array(v) for k, v in rounded.items()})
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate, then encode the payloads."""
        return self._encode(self.inner.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Decode (evaluate replies carry no arrays today), delegate."""
        return self.inner.aggregate_evaluate(server_round, self._decode(replies))
