"""One node's SecAgg+ secrets for one round, kept in Flower's ``Context.state`` between stages.

A deployed SuperNode runs every message in a fresh ClientApp process, so what a node must remember
from one stage to the next (its two key pairs, its private-mask seed, the key shares other nodes
sent it) lives in ``Context.state`` under :data:`STATE_KEY` as one ``ConfigRecord`` (bytes, ints
and lists only; dicts travel as aligned key and value lists). The record is written at set-up,
replaced at every stage, and deleted once the node has answered the unmask request, so nothing
outlives the round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from flwr.app import ConfigRecord, Context

STATE_KEY = "corolla.secagg"


class StageOrderError(RuntimeError):
    """A SecAgg message arrived out of order (wrong stage or round); the node refuses it."""


@dataclass
class RoundSecrets:
    """What one node holds between the stages of one SecAgg+ round."""

    server_round: int
    stage: str  # the last stage this node completed (a message type of ``contract.secagg``)
    node_id: int
    threshold: int
    clip_range: float
    bits: int
    modulus_bits: int
    max_weight: int
    weighted: bool
    sk1: bytes  # PEM private keys: sk1 derives pairwise masks, sk2 the share-encryption keys
    pk1: bytes
    sk2: bytes
    pk2: bytes
    seed: bytes = b""  # private-mask seed (share-keys stage on)
    neighbours: list[int] = field(default_factory=list)  # share order: neighbour i gets share i+1
    pk1s: dict[int, bytes] = field(default_factory=dict)
    pk2s: dict[int, bytes] = field(default_factory=dict)
    seed_shares: dict[int, bytes] = field(default_factory=dict)  # owner node -> its seed share for us
    key_shares: dict[int, bytes] = field(default_factory=dict)  # owner node -> its sk1 share for us
    masked_with: list[int] = field(default_factory=list)

    def to_record(self) -> ConfigRecord:
        """Flatten into a ConfigRecord (dicts as ``<name>:keys`` / ``<name>:values`` lists)."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                out[f"{f.name}:keys"] = list(value)
                out[f"{f.name}:values"] = list(value.values())
            else:
                out[f.name] = value
        return ConfigRecord(out)

    @classmethod
    def from_record(cls, record: ConfigRecord) -> RoundSecrets:
        """Inverse of :meth:`to_record`."""
        values: dict = {}
        for f in fields(cls):
            if f"{f.name}:keys" in record:
                keys, items = record[f"{f.name}:keys"], record[f"{f.name}:values"]
                if not isinstance(keys, list) or not isinstance(items, list):
                    raise StageOrderError(f"this node's SecAgg state is damaged (`{f.name}`)")
                values[f.name] = dict(zip((int(k) for k in keys), items, strict=True))
            elif f.name in record:
                values[f.name] = record[f.name]
        values["neighbours"] = [int(n) for n in values.get("neighbours", [])]
        values["masked_with"] = [int(n) for n in values.get("masked_with", [])]
        return cls(**values)

    def save(self, context: Context) -> None:
        """Write to ``context.state``."""
        context.state[STATE_KEY] = self.to_record()

    @classmethod
    def load(cls, context: Context, *, stage: str, server_round: int) -> RoundSecrets:
        """The node's secrets, which must have completed ``stage`` of ``server_round``.

        Raises
        ------
        StageOrderError
            If the node holds no secrets, or holds another round's or stage's.
        """
        if STATE_KEY not in context.state:
            raise StageOrderError(f"SecAgg round {server_round}: this node holds no secrets (no set-up message seen)")
        secrets = cls.from_record(context.state.config_records[STATE_KEY])
        if secrets.server_round != server_round or secrets.stage != stage:
            raise StageOrderError(
                f"SecAgg round {server_round}: expected the stage after {stage!r}, but this node is at "
                f"{secrets.stage!r} of round {secrets.server_round}"
            )
        return secrets

    @staticmethod
    def forget(context: Context) -> None:
        """Delete the round's secrets from ``context.state``."""
        if STATE_KEY in context.state:
            del context.state[STATE_KEY]

