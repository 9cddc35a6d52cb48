"""Secure aggregation (SecAgg+) on the Message API: message types, wire keys, config and the vector.

The protocol (Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
CCS 2020, arXiv:2002.06287, §3; Bonawitz et al., CCS 2017, IACR ePrint 2017/281, for the full graph) runs in four stages,
each one round trip between the ServerApp (``server.secagg``) and the ClientApp (``client.secagg``)
through ``grid.send_and_receive``; ``server.secagg`` lays out the message flow. This module is
what both sides share: message types, record keys, the ``secagg.*`` section, and the integer vector
a client masks: ``[w_i, w_i·q(u_i), w_i·q(m_i)]`` with ``w_i`` the client's weight (``num-examples``
capped at ``secagg.max-weight``, or 1 for uniform weighting), ``u_i`` its update (payload minus the
global arrays it received), ``m_i`` its masked metrics (``train_loss``) and ``q`` Flower's stochastic
quantiser. Summing the vectors gives ``Σ w_i``, ``Σ w_i·q(u_i)`` and ``Σ w_i·q(m_i)`` exactly, so the
server learns the weighted mean and the total weight but no client's update or weight.

Quantisation error bound
------------------------
With ``c = secagg.clip-range``, ``b = secagg.quantization-bits`` and ``Q = 2^b − 1`` levels,
each entry of ``clip(u_i, −c, c)`` is mapped to ``[0, Q]`` and stochastically rounded (unbiased,
``|error| < 2c/Q`` per client). The decoded weighted mean is a convex combination of the clients'
quantised values, so for every entry, any number of clients ``K`` and any weights:

    |û − Σ w_i·clip(u_i) / Σ w_i|  <  2c / (2^b − 1)            (mean; independent of K)
    |Σ̂ − Σ w_i·clip(u_i)|          <  (Σ w_i)·2c / (2^b − 1)  ≤  K·M·2c / (2^b − 1)   (sum)

with ``M = secagg.max-weight``. No clipping happens when every update entry lies in ``[−c, c]``.
``K`` only enters through the modulus: the sum of ``K`` vectors must not wrap, so the ring is
``Z_{2^m}`` with ``2^m > K·M·Q`` (:meth:`Quantiser.modulus`); ``m ≤ 62`` limits ``K·M·Q < 2^62``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from pydantic import Field, field_validator

from .config import Section, register_section
from .base_delta import BASE_VERSION
from .frozen import FROZEN_CONFIRMED
from .records import EPSILON, TRAIN_LOSS

# --- message types (one per stage; Flower routes "<category>.<action>" to the ClientApp) ----------
SETUP = "query.secagg_setup"  # server -> client: protocol parameters; reply: two public keys
SHARE_KEYS = "query.secagg_share_keys"  # neighbours' public keys; reply: encrypted key shares
COLLECT = "train.secagg_collect"  # the round's train content + forwarded shares; reply: masked vector
UNMASK = "query.secagg_unmask"  # survivors / dropped neighbours; reply: the shares to unmask with
STAGES = (SETUP, SHARE_KEYS, COLLECT, UNMASK)
STAGE_NAMES = {SETUP: "set-up", SHARE_KEYS: "share-keys", COLLECT: "collect", UNMASK: "unmask"}

# --- ledger phases (server.metering.ByteLedger), one per stage ------------------------------------
PHASES = {SETUP: "secagg-setup", SHARE_KEYS: "secagg-share-keys", COLLECT: "secagg-collect", UNMASK: "secagg-unmask"}

# --- record keys ----------------------------------------------------------------------------------
SECAGG = "secagg"  # the ConfigRecord every SecAgg message and reply carries
VECTOR = "secagg-vector"  # the ArrayRecord holding a client's masked vector (one array, MASKED)
MASKED = "masked"
PUBLIC = "secagg-public"  # MetricRecord of a masked-vector reply: protocol metadata, no data

# --- ConfigRecord keys ----------------------------------------------------------------------------
ROUND = "round"
THRESHOLD = "threshold"  # t: shares needed to reconstruct a secret
NUM_SHARES = "num-shares"  # size of a client's share group (its SecAgg+ neighbourhood, itself included)
CLIP_RANGE = "clip-range"
BITS = "quantization-bits"
MODULUS_BITS = "modulus-bits"  # the ring is Z_{2^m}
MAX_WEIGHT = "max-weight"
WEIGHTED = "weighted"  # 1: w_i = min(num-examples, max-weight); 0: w_i = 1
PK1, PK2 = "pk1", "pk2"  # public keys: pk1 for pairwise masks, pk2 for encrypting shares
NODES = "nodes"  # share-keys request: the neighbours' node ids, in share order (index i+1)
PK1_LIST, PK2_LIST = "pk1-list", "pk2-list"  # ... and their public keys, aligned with NODES
DESTINATIONS = "destinations"  # share-keys reply: destination node per ciphertext
CIPHERTEXTS = "ciphertexts"
SEED_COMMITMENT = "seed-commitment"  # sha256 of the private-mask seed; lets the server verify it
SOURCES = "sources"  # collect request: the sender of each forwarded ciphertext
MASKED_WITH = "masked-with"  # collect reply: the neighbours this client added pairwise masks for
ACTIVE = "active"  # unmask request: neighbours whose vectors were summed (send their seed shares)
DEAD = "dead"  # ... and neighbours that dropped after sharing (send their pk1 secret-key shares)
SEED_SHARE_NODES, SEED_SHARES = "seed-share-nodes", "seed-shares"
KEY_SHARE_NODES, KEY_SHARES = "key-share-nodes", "key-shares"

PUBLIC_METRICS = (BASE_VERSION, FROZEN_CONFIRMED, EPSILON)
"""Train-reply metrics sent in plaintext next to the masked vector: protocol state (which base and
frozen factors the node holds) and the node's DP ε. ε depends on the node's sampling rate, hence
roughly on its number of examples; everything else (``num-examples``, ``train_loss``, plugin
reports, ``partition-id``) is masked or not sent."""

MASKED_METRICS = (TRAIN_LOSS,)
METRIC_CLIP = 64.0  # masked metrics are clipped to [−64, 64] (a cross-entropy above 64 is noise)
MAX_MODULUS_BITS = 62  # int64 arithmetic wraps mod 2^64, so any ring Z_{2^m}, m ≤ 62, is exact


class SecAggConfig(Section):
    """``secagg.*``: secure aggregation (SecAgg+) for the strategies whose aggregate is a weighted sum."""

    enabled: bool = Field(False, description="run SecAgg+: the server learns only the clients' weighted sum")
    threshold: float = Field(
        0.6, gt=0, le=1_000_000, description="shares needed to reconstruct a client's secrets: a fraction (0, 1] of its "
        "share group, or a count >= 2; fewer surviving clients drop the round"
    )
    num_shares: float = Field(
        1.0, gt=0, le=1_000_000, description="each client's share group (SecAgg+ neighbourhood): a fraction (0, 1] of the "
        "sampled clients, or a count >= 3; 1.0: every sampled client (SecAgg)"
    )
    clip_range: float = Field(1.0, gt=0, le=1e6, description="each entry of a client's update (new - global) is "
                              "clipped to [-c, c] before quantisation")
    quantization_bits: int = Field(22, ge=2, le=30, description="b: updates are quantised to 2^b - 1 levels; "
                                   "mean error < 2c / (2^b - 1) per entry")
    max_weight: int = Field(10000, ge=1, le=1_000_000_000, description="largest client weight: num-examples above it are capped")

    @field_validator("threshold", "num_shares")
    @classmethod
    def _fraction_or_count(cls, value: float, info: Any) -> float:
        least = 2 if info.field_name == "threshold" else 3
        if value > 1 and (not float(value).is_integer() or value < least):
            raise ValueError(f"use a fraction in (0, 1] or a whole count >= {least}")
        return value


register_section("secagg", SecAggConfig, owner="contract.secagg")


def group_size(num_shares: float, sampled: int) -> int:
    """Clients per share group for ``sampled`` clients: odd, at least 3, at most ``sampled``."""
    size = round(num_shares * sampled) if num_shares <= 1 else int(num_shares)
    if size >= sampled:
        return sampled
    size = max(size, 3)
    return min(size + 1 - size % 2, sampled)  # SecAgg+ rings are symmetric: an odd group


def threshold_count(threshold: float, group: int) -> int:
    """Shares ``t`` needed per secret for share groups of ``group`` clients (at least 2)."""
    t = int(np.ceil(threshold * group - 1e-9)) if threshold <= 1 else int(threshold)
    return max(t, 2)


@dataclass(frozen=True)
class VectorLayout:
    """The order in which arrays and masked metrics are flattened into one vector."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    metrics: tuple[str, ...] = MASKED_METRICS

    @classmethod
    def of(cls, arrays: Mapping[str, Any]) -> VectorLayout:
        """The layout of ``arrays`` (numpy arrays or Flower ``Array``s), in their key order."""
        return cls(tuple(arrays), tuple(tuple(int(d) for d in a.shape) for a in arrays.values()))

    @property
    def num_values(self) -> int:
        """Update entries (the arrays' total size)."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def size(self) -> int:
        """Vector length: the weight, every update entry, every masked metric."""
        return 1 + self.num_values + len(self.metrics)

    def flatten(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """``arrays`` as one float64 vector of length :attr:`num_values`; keys and shapes must match."""
        if list(arrays) != list(self.keys):
            raise ValueError(f"arrays have keys {sorted(arrays)}, the round's layout has {sorted(self.keys)}")
        parts = []
        for key, shape in zip(self.keys, self.shapes, strict=True):
            value = np.asarray(arrays[key])
            if tuple(value.shape) != shape:
                raise ValueError(f"`{key}` has shape {value.shape}, the round's layout has {shape}")
            parts.append(value.astype(np.float64).ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Inverse of :meth:`flatten` (float64)."""
        out, start = {}, 0
        for key, shape in zip(self.keys, self.shapes, strict=True):
            n = int(np.prod(shape))
            out[key] = values[start : start + n].reshape(shape)
            start += n
        return out


@dataclass(frozen=True)
class Quantiser:
    """Integer encoding of one client's contribution and decoding of the sum (module docstring)."""

    clip_range: float
    bits: int
    max_weight: int
    weighted: bool

    @property
    def levels(self) -> int:
        """``Q = 2^b − 1``: a clipped entry maps to ``[0, Q]``."""
        return 2**self.bits - 1

    @property
    def error_bound(self) -> float:
        """Per-entry bound on the decoded weighted mean's quantisation error: ``2c / (2^b − 1)``."""
        return 2 * self.clip_range / self.levels

    def weight(self, num_examples: int) -> int:
        """``w_i``: ``num-examples`` capped at ``max-weight`` (weighted), else 1."""
        return max(1, min(int(num_examples), self.max_weight)) if self.weighted else 1

    def modulus_bits(self, clients: int) -> int:
        """Smallest ``m`` with ``2^m > K·M·Q`` (the sum of ``clients`` vectors never wraps).

        Raises
        ------
        ValueError
            If that needs more than 62 bits, naming the keys to lower.
        """
        largest = clients * (self.max_weight if self.weighted else 1) * self.levels
        bits = max(int(largest).bit_length(), 1)
        if bits > MAX_MODULUS_BITS:
            raise ValueError(
                f"{clients} clients x secagg.max-weight {self.max_weight} x 2^{self.bits} levels overflow the "
                f"2^{MAX_MODULUS_BITS} ring; lower `secagg.quantization-bits` or `secagg.max-weight`"
            )
        return bits

    def encode(self, update: np.ndarray, metrics: np.ndarray, num_examples: int) -> np.ndarray:
        """``[w, w·q(clip(update)), w·q(clip(metrics))]`` as int64 (Flower's stochastic quantiser)."""
        w = self.weight(num_examples)
        q_update = quantize([np.asarray(update, dtype=np.float64)], self.clip_range, self.levels)[0]
        q_metrics = quantize([np.asarray(metrics, dtype=np.float64)], METRIC_CLIP, self.levels)[0]
        return np.concatenate([[w], w * q_update.astype(np.int64), w * q_metrics.astype(np.int64)]).astype(np.int64)

    def decode(self, total: np.ndarray, layout: VectorLayout, clients: int) -> tuple[int, np.ndarray, np.ndarray]:
        """From the unmasked sum: ``(Σ w_i, Σ w_i·u_i, Σ w_i·m_i)`` (float64, within the bound).

        Raises
        ------
        ValueError
            If the sum cannot come from ``clients`` honest vectors (a corrupt vector or share).
        """
        total = np.asarray(total, dtype=np.int64)
        weight = int(total[0])
        most = clients * (self.max_weight if self.weighted else 1)
        if not 1 <= weight <= most:
            raise ValueError(f"decoded total weight {weight} is outside [1, {most}]: a masked vector or share was corrupt")
        mean_q = total[1:].astype(np.float64) / weight  # each in [0, Q] for honest clients
        if mean_q.size and (mean_q.min() < 0 or mean_q.max() > self.levels):
            raise ValueError("decoded aggregate is outside the quantisation range: a masked vector or share was corrupt")
        n = layout.num_values
        mean_update = mean_q[:n] * (2 * self.clip_range / self.levels) - self.clip_range  # Flower's dequantize map
        mean_metrics = mean_q[n:] * (2 * METRIC_CLIP / self.levels) - METRIC_CLIP
        return weight, weight * mean_update, weight * mean_metrics


def mask(seed: bytes, modulus_bits: int, size: int) -> np.ndarray:
    """The pseudo-random mask expanded from ``seed``: ``size`` int64 values in ``[0, 2^m − 1)``.

    Flower's ``pseudo_rand_gen``. Note its strength: it XOR-folds the 32-byte seed into a 32-bit
    MT19937 seed, so a mask is one of at most 2^32 streams (a guessable space); swapping in an
    AES-CTR keystream here would need no other change.
    """
    return pseudo_rand_gen(seed, 2**modulus_bits, [(size,)])[0]


def pairwise_sign(own: int, other: int) -> int:
    """+1 if node ``own`` adds the pairwise mask it shares with ``other``, −1 if it subtracts it."""
    return 1 if own > other else -1


def reduce_mod(vector: np.ndarray, modulus_bits: int) -> np.ndarray:
    """``vector mod 2^m`` for int64 vectors (two's complement wrap-around is harmless)."""
    return np.asarray(vector, dtype=np.int64) & np.int64(2**modulus_bits - 1)


def wire_bytes(modulus_bits: int) -> int:
    """Bytes per masked entry on the wire: ``ceil(m / 8)``."""
    return (modulus_bits + 7) // 8


def pack(vector: np.ndarray, modulus_bits: int) -> np.ndarray:
    """A vector over ``Z_{2^m}`` as ``(size, ceil(m/8))`` little-endian uint8 (5 bytes per entry for
    ``m = 39`` instead of int64's 8)."""
    as_bytes = np.ascontiguousarray(vector, dtype="<u8").view(np.uint8).reshape(-1, 8)  # (size, 8)
    return np.ascontiguousarray(as_bytes[:, : wire_bytes(modulus_bits)])


def unpack(packed: np.ndarray, modulus_bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: int64 values in ``[0, 2^(8·ceil(m/8)))``."""
    width = wire_bytes(modulus_bits)
    full = np.zeros((packed.shape[0], 8), dtype=np.uint8)
    full[:, :width] = packed
    return full.view("<u8").reshape(-1).astype(np.int64)


def compact_record(values: Mapping[str, Any]) -> ConfigRecord:
    """A ConfigRecord without its empty lists: readers take an absent list key as ``[]``.

    Flower 1.42's ``ConfigRecord.count_bytes`` (which metering uses) fails on an empty list.
    """
    return ConfigRecord({key: value for key, value in values.items() if not (isinstance(value, list) and not value)})
