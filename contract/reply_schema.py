"""What a client may put in a reply's MetricRecord, and the server's bounds on replies (``validation.*``).

A reply is untrusted until checked (``docs/trust.md §1``). Every metric a client sends is declared
here as a :class:`MetricSpec` (its type, its range, which replies may carry it, whether it may be
NaN); a reply with an undeclared key, a list where a scalar is declared, a non-integer where an
integer is declared, or a value out of range is dropped, with the key and the rule in the reason.
The core declarations (:data:`CORE_METRICS`) cover what Corolla's own ClientApp sends; a task or a
strategy that makes clients send more declares it (``Task.reply_metrics``,
``StrategyInfo.reply_metrics``) and the ServerApp joins them into one :class:`MetricSchema`.

The ``validation.*`` section bounds what no declaration can: the examples a client may claim
(``max-num-examples``; the weight of a weighted mean) and the L2 norm of its update
(``max-update-norm``). Both defaults are generous by orders of magnitude for honest clients and
still keep every sum the server forms finite in float32 (``docs/trust.md §2``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from flwr.app import MetricRecordValues
from pydantic import Field

from .base_delta import BASE_VERSION
from .config import Section, register_section
from .factor_roles import GLOBAL_VERSION
from .frozen import FROZEN_CONFIRMED
from .ranks import ADAPTER_RANK
from .records import EPSILON, NUM_EXAMPLES, PARTITION_ID, TRAIN_LOSS

ReplyKind = Literal["train", "evaluate"]

DEFAULT_MAX_NUM_EXAMPLES = 10_000_000
"""``validation.max-num-examples``: ten million examples per client and round, far above any shard a
client trains on in one round, far below what lets one liar out-weigh millions of honest examples."""

DEFAULT_MAX_UPDATE_NORM = 1e6
"""``validation.max-update-norm``: the L2 norm of ``reply - sent`` over all arrays. Honest LoRA updates
are O(1) to O(100) (docs/trust.md §2); with every factor below 1e6 a product ``B A`` of one client
stays below 1e12 and any weighted sum of them far below float32's 3.4e38."""

PARTITION_LIMIT = 2**31 - 1
"""The largest partition id a reply may report (the node config's ``partition-id`` is an int32)."""


class ValidationConfig(Section):
    """``validation.*``: the server's bounds on what one client's reply may claim."""

    max_num_examples: int = Field(
        DEFAULT_MAX_NUM_EXAMPLES, ge=1, le=2**53,
        description="largest `num-examples` a reply may claim (its weight in a weighted mean); above it the reply is dropped",
    )
    max_update_norm: float = Field(
        DEFAULT_MAX_UPDATE_NORM, gt=0, le=1e30,
        description="largest L2 norm of a reply's update (returned arrays minus those sent); above it the reply is dropped",
    )


register_section("validation", ValidationConfig, owner="contract.reply_schema")


class ReplyMetricError(ValueError):
    """A reply's metrics break the schema; the message names the key and the rule, ``code`` is the
    rule's short name (``summary.json`` counts dropped replies by it)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class MetricSpec:
    """One metric a client may send.

    Attributes
    ----------
    name : str
        The metric's key, or the prefix of a family of keys when ``prefix`` is True (``eval_``).
    kind : {"int", "float"}
        ``int``: a whole number (an integral float such as ``3.0`` is accepted); ``float``: any number.
    low, high : float | None
        Inclusive bounds (``None``: unbounded on that side).
    replies : tuple[ReplyKind, ...]
        Which replies may carry it.
    allow_nan : bool
        Whether NaN is a legitimate value ("undefined", e.g. an evaluation metric over no examples).
        Infinities are never accepted.
    prefix : bool
        ``name`` is a prefix; the rest of the key must be a short plain name.
    doc : str
        What it is (``docs/trust.md`` lists them).
    """

    name: str
    kind: Literal["int", "float"]
    low: float | None = None
    high: float | None = None
    replies: tuple[ReplyKind, ...] = ("train",)
    allow_nan: bool = False
    prefix: bool = False
    doc: str = ""

    def check(self, key: str, value: MetricRecordValues) -> None:
        """Raise :class:`ReplyMetricError` unless ``value`` fits this declaration."""
        if isinstance(value, list):
            raise ReplyMetricError(f"metric `{key}` must be a scalar {self.kind}, got a list of {len(value)}", "metric-list")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReplyMetricError(f"metric `{key}` must be a {self.kind}, got {type(value).__name__}", "metric-type")
        number = float(value)
        if math.isnan(number):
            if self.allow_nan:
                return
            raise ReplyMetricError(f"metric `{key}` is NaN", "metric-non-finite")
        if math.isinf(number):
            raise ReplyMetricError(f"metric `{key}` is {number}", "metric-non-finite")
        if self.kind == "int" and not number.is_integer():
            raise ReplyMetricError(f"metric `{key}` must be a whole number, got {value!r}", "metric-type")
        if self.low is not None and number < self.low:
            raise ReplyMetricError(f"metric `{key}` = {value!r} is below its minimum {self.low:g}", "metric-range")
        if self.high is not None and number > self.high:
            raise ReplyMetricError(f"metric `{key}` = {value!r} is above its maximum {self.high:g}", "metric-range")


_SUFFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")
_MAX_SUFFIX = 96

PARTITION_SPEC = MetricSpec(PARTITION_ID, "int", 0, PARTITION_LIMIT, ("train", "evaluate"),
                            doc="the client's data partition; orders replies (node id when unusable)")

EPSILON_SPEC = MetricSpec(EPSILON, "float", 0, None, doc="the client's DP ε spent so far (DP runs only)")

CORE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(NUM_EXAMPLES, "int", 1, None, ("train", "evaluate"),
               doc="examples behind the reply (the weight); capped by `validation.max-num-examples`"),
    PARTITION_SPEC,
    MetricSpec(TRAIN_LOSS, "float", 0, None, doc="mean local training loss (a cross-entropy: >= 0)"),
    EPSILON_SPEC,
    MetricSpec(BASE_VERSION, "int", 0, None, ("train", "evaluate"),
               doc="the frozen-base version the node holds (FedEx-LoRA, FLoRA; the strategy checks <= its own)"),
    MetricSpec(FROZEN_CONFIRMED, "int", 0, 1, ("train", "evaluate"),
               doc="1 once the node verified and installed the frozen factors"),
    MetricSpec(GLOBAL_VERSION, "int", 0, None, ("train", "evaluate"),
               doc="the global-adapter version the node holds (RoLoRA, FedSVD, FedSA)"),
    MetricSpec(ADAPTER_RANK, "int", 1, None, ("train", "evaluate"),
               doc="the LoRA rank the node trained at (mixed ranks; the strategy checks it against the census)"),
    MetricSpec("eval_", "float", None, None, ("evaluate",), allow_nan=True, prefix=True,
               doc="the task's evaluation metrics (`eval_<name>`; NaN: undefined on this shard); rows: `fed_eval_<name>`"),
)
"""What Corolla's own ClientApp sends (``client/app.py``)."""


class MetricSchema:
    """The declared metrics of a run: exact names and prefixes, per reply kind."""

    def __init__(self, specs: Iterable[MetricSpec], *, max_num_examples: int = DEFAULT_MAX_NUM_EXAMPLES) -> None:
        self.exact: dict[str, MetricSpec] = {}
        self.prefixes: dict[str, MetricSpec] = {}
        for spec in specs:
            table = self.prefixes if spec.prefix else self.exact
            if spec.name in table and table[spec.name] != spec:
                raise ValueError(f"reply metric `{spec.name}` is declared twice, differently: {table[spec.name]} and {spec}")
            table[spec.name] = spec
        self.max_num_examples = max_num_examples

    @classmethod
    def for_run(
        cls, extra: Iterable[MetricSpec] = (), *, limits: ValidationConfig | None = None, privacy: bool = True
    ) -> MetricSchema:
        """The core declarations plus ``extra`` (a task's, a strategy's); ``privacy=False`` leaves
        ``epsilon`` out, so a client of a run without DP cannot put an ε in its rows."""
        limits = limits or ValidationConfig()
        core = [s for s in CORE_METRICS if privacy or s.name != EPSILON]
        return cls([*core, *extra], max_num_examples=limits.max_num_examples)

    def spec(self, key: str) -> MetricSpec | None:
        """The declaration ``key`` falls under, or ``None``."""
        if key in self.exact:
            return self.exact[key]
        for prefix, spec in self.prefixes.items():
            suffix = key[len(prefix):]
            if key.startswith(prefix) and 0 < len(suffix) <= _MAX_SUFFIX and set(suffix) <= _SUFFIX_CHARS:
                return spec
        return None

    def check(self, metrics: Mapping[str, MetricRecordValues], reply: ReplyKind) -> int:
        """Check every metric of one reply; return its ``num-examples``.

        Raises
        ------
        ReplyMetricError
            An undeclared key, a key this kind of reply may not carry, a value that breaks its
            declaration, a missing ``num-examples`` or one above the cap.
        """
        for key, value in metrics.items():
            spec = self.spec(key)
            if spec is None:
                shown = key if len(key) <= 64 else key[:61] + "..."
                raise ReplyMetricError(
                    f"metric `{shown}` is not declared (a task or strategy that sends it declares it in "
                    "`reply_metrics`, docs/trust.md §1)", "metric-undeclared",
                )
            if reply not in spec.replies:
                raise ReplyMetricError(f"metric `{key}` does not belong in a {reply} reply", "metric-undeclared")
            spec.check(key, value)
        if NUM_EXAMPLES not in metrics:
            raise ReplyMetricError(f"missing `{NUM_EXAMPLES}` in the MetricRecord", "num-examples-missing")
        count = int(metrics[NUM_EXAMPLES])  # type: ignore[arg-type]  # a whole scalar: checked above
        if count > self.max_num_examples:
            raise ReplyMetricError(
                f"`{NUM_EXAMPLES}` = {count} is above `validation.max-num-examples` = {self.max_num_examples}",
                "num-examples-cap",
            )
        return count


def partition_of(metrics: Mapping[str, MetricRecordValues]) -> int | None:
    """The reply's ``partition-id`` if it is a usable one (a whole number in ``0..2^31-1``), else ``None``."""
    value = metrics.get(PARTITION_ID)
    try:
        PARTITION_SPEC.check(PARTITION_ID, value)  # type: ignore[arg-type]  # None fails the check too
    except ReplyMetricError:
        return None
    return int(value)  # type: ignore[arg-type]  # checked: a finite whole number
