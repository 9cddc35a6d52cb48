"""The client side of ``contract.factor_roles``: completing a partial adapter, training part of it.

A message of FedSA-LoRA, RoLoRA or FedSVD carries part of the adapter and names the roles of the
rest (``docs/algorithms.md §13``-``§16``). :class:`RoundFactors` turns it back into the whole
payload the model loads, freezes the round's fixed layers while training, trims the reply, and
keeps what must outlive the message in the node's ``Context.state`` (a deployed node runs each
message in a fresh process; a simulation worker serves many nodes in turn):

- ``corolla.local-factors``: the node's own local layers (FedSA's ``B``), one array per module,
  overwritten every round (bounded: ``r·Σm`` floats). A node that has none yet starts from zeros,
  LoRA's initial ``B``.
- ``corolla.global-adapter`` (+ ``-meta``): the node's copy of the global adapter and its version,
  when the server sends only what changed (RoLoRA); one copy, overwritten.

Both are written only after the node's work succeeded (:meth:`RoundFactors.commit`), so a failed
round leaves the previous state, and the server, which forgets the version of a node whose reply
is an error, sends it everything again. A message without roles passes through unchanged.

Checkpoint and resume: the local ``B``'s never reach the server, so the server's checkpoint does
not hold them; a resumed run (a new Flower run, hence new node contexts) restarts every client's
``B`` from zero, and its first messages carry the whole global adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from adapters.payload import Payload, load, payload_spec
from contract import CONFIG
from contract.factor_roles import (
    FIXED_LAYERS,
    GLOBAL_FROM_VERSION,
    GLOBAL_VERSION,
    LOCAL_LAYERS,
    decode_layers,
    in_layers,
)

STATE_LOCAL = "corolla.local-factors"
STATE_GLOBAL = "corolla.global-adapter"
STATE_GLOBAL_META = "corolla.global-adapter-meta"
PayloadSpec = Mapping[str, tuple[tuple[int, ...], np.dtype]]
PERSONAL_PREFIX = "personal_"  # evaluate metric prefix of the personalised score (eval_personal_<metric>)


def _version(value: object, key: str) -> int | None:
    if value is not None and not isinstance(value, int):
        raise ValueError(f"`{key}` is {value!r}, expected a version number")
    return value


class GlobalVersionMismatch(RuntimeError):
    """The server sent changes from a global version this node does not hold."""


@dataclass
class RoundFactors:
    """The roles one message gives the adapter's layers, and the node state they read and write."""

    context: Context
    local: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    version: int | None = None
    from_version: int | None = None
    _global: Payload | None = None  # the completed global adapter (local layers excluded), to commit

    @classmethod
    def of(cls, content: RecordDict, context: Context) -> RoundFactors:
        """Read the roles from the message's config record (none: the whole adapter travels)."""
        config = content[CONFIG]
        version = config.get(GLOBAL_VERSION)
        start = config.get(GLOBAL_FROM_VERSION)
        return cls(
            context=context,
            local=decode_layers(config.get(LOCAL_LAYERS)),
            fixed=decode_layers(config.get(FIXED_LAYERS)),
            version=_version(version, GLOBAL_VERSION),
            from_version=_version(start, GLOBAL_FROM_VERSION),
        )

    @property
    def active(self) -> bool:
        """Whether the message ships part of the adapter."""
        return bool(self.local or self.fixed or self.version is not None)

    # --- receiving ------------------------------------------------------------------------------
    def complete(self, received: Payload, model: torch.nn.Module, *, personal: bool = True) -> Payload:
        """The whole payload for ``model``: ``received`` over the node's copy of the global adapter
        (when the message holds only changes) and the local layers (its own, or zeros with
        ``personal=False``: the global model)."""
        if not self.active:
            return received
        return self.complete_spec(received, payload_spec(model), personal=personal)

    def complete_spec(self, received: Payload, spec: PayloadSpec, *, personal: bool = True) -> Payload:
        """:meth:`complete` for a payload of ``spec`` (key -> (shape, dtype) of the whole adapter)."""
        merged = dict(received)
        if self.from_version is not None:
            merged = {**self._stored_global(spec), **received}
        if self.version is not None:
            self._global = {k: v for k, v in merged.items() if not in_layers(k, self.local)}
        local_keys = [k for k in spec if in_layers(k, self.local)]
        own = self.local_arrays(spec) if personal else {}
        for key in local_keys:
            shape, dtype = spec[key]
            merged[key] = own.get(key, np.zeros(shape, dtype=dtype))
        return merged

    def _stored_global(self, spec: PayloadSpec) -> Payload:
        meta = self.context.state.config_records.get(STATE_GLOBAL_META)
        held = _version(meta[GLOBAL_VERSION], GLOBAL_VERSION) if meta is not None else None
        if held != self.from_version or STATE_GLOBAL not in self.context.state.array_records:
            raise GlobalVersionMismatch(
                f"the server sent the global adapter's changes since version {self.from_version}, but this "
                f"node holds {'no copy' if held is None else f'version {held}'}; it is sent everything next round"
            )
        stored = {k: a.numpy() for k, a in self.context.state.array_records[STATE_GLOBAL].items()}
        return {k: v for k, v in stored.items() if k in spec}

    def local_arrays(self, spec: PayloadSpec) -> Payload:
        """The node's own local layers from ``Context.state`` (empty before its first round).

        Raises
        ------
        ValueError
            If the stored arrays do not fit the model (the run's adapter changed under the node).
        """
        if not self.local or STATE_LOCAL not in self.context.state.array_records:
            return {}
        stored = {k: a.numpy() for k, a in self.context.state.array_records[STATE_LOCAL].items()}
        wrong = [k for k, v in stored.items() if k not in spec or tuple(v.shape) != tuple(spec[k][0])]
        if wrong:
            raise ValueError(
                f"this node's stored local adapter layers {wrong[:3]} do not fit the model; "
                "`adapter.*` must not change within a run"
            )
        return stored

    # --- training and replying -------------------------------------------------------------------
    @contextmanager
    def training(self, model: torch.nn.Module) -> Iterator[None]:
        """Freeze the round's fixed layers for the duration (their gradients and updates are off)."""
        frozen = [p for name, p in model.named_parameters() if p.requires_grad and in_layers(name, self.fixed)]
        for param in frozen:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param in frozen:
                param.requires_grad_(True)

    def reply(self, payload: Payload) -> Payload:
        """The arrays a train reply carries: everything but the local and fixed layers."""
        held_back = self.local + self.fixed
        return {k: v for k, v in payload.items() if not in_layers(k, held_back)}

    def reply_metrics(self) -> dict[str, int]:
        """The global version the node holds after this message, when the server tracks it."""
        return {} if self.version is None else {GLOBAL_VERSION: self.version}

    def commit(self, trained: Payload | None = None) -> None:
        """Record, after success, the node's copy of the global adapter and its trained local layers."""
        state = self.context.state
        if self._global is not None and self.version is not None:
            state[STATE_GLOBAL] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in sorted(self._global.items())})
            state[STATE_GLOBAL_META] = ConfigRecord({GLOBAL_VERSION: self.version})
        if trained is not None and self.local:
            own = {k: v for k, v in trained.items() if in_layers(k, self.local)}
            state[STATE_LOCAL] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in sorted(own.items())})

    # --- evaluation --------------------------------------------------------------------------------
    def personal_scores(
        self, model: torch.nn.Module, global_payload: Payload, score: Callable[[], Mapping[str, float]]
    ) -> dict[str, float]:
        """With local layers: ``score()`` of the node's personalised model (global payload + its own
        local layers), keyed ``personal_<name>``; the global payload is loaded again afterwards."""
        if not self.local:
            return {}
        own = self.local_arrays(payload_spec(model))
        load(model, {**global_payload, **own})
        try:
            values = dict(score())
        finally:
            load(model, global_payload)
        return {f"{PERSONAL_PREFIX}{name}": float(value) for name, value in values.items()}
