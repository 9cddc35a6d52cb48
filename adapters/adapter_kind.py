"""What an adapter kind is: everything the platform needs from one, declared in one class.

Every kind is PEFT LoRA underneath (a ``LoraConfig`` the kind edits, PEFT's state-dict keys), so the
payload code is shared: what travels is the PEFT adapter state minus the layers the kind freezes
(``adapters.payload``). A kind is a subclass of :class:`AdapterKind` registered with
:func:`adapters.kind_registry.register_adapter_kind`; ``corolla adapters`` prints the registered ones.

Required: the descriptive class attributes (``name``, ``paper``, ``summary``, ``trains``,
``layout_keys``, ``layout_form``; ``frozen_layers`` may stay empty) and the methods
:meth:`~AdapterKind.configure`, :meth:`~AdapterKind.factored_update` and
:meth:`~AdapterKind.module_params`. Everything else has a default that suits a kind which trains
what it ships, needs no server-side set-up and saves as a PEFT adapter.

Notation (per adapted module, as in ``adapters.lora``): ``W = W0 + ΔW`` with ``W0: (m, n)``;
``B: (m, r)`` is ``lora_B``, ``A: (r, n)`` is ``lora_A`` and ``s`` the scale PEFT stores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer

from adapters.peft_model import frozen_layer_names, layer_names, unwrap

if TYPE_CHECKING:
    from adapters.lora import AdapterSpec
    from contract import RunConfig

Arrays = Mapping[str, np.ndarray]
LayoutEntry = Mapping[str, Any]  # one module of ``adapters.payload.layout``: its keys, "scale", "fan_in_fan_out"


class ModuleParams(NamedTuple):
    """Parameters of one adapted ``(m, n)`` module: trained (sent every round) and frozen (sent once)."""

    trained: int
    frozen: int


class ProjectedUpdate(NamedTuple):
    """A module's payload arrays re-expressing ``P·ΔW``, and the squared Frobenius norms of the part
    the kind could not represent (``lost``) and of the target (``total``); both 0 when exact."""

    arrays: dict[str, np.ndarray]
    lost: float
    total: float


class CalibrationSample(NamedTuple):
    """The server's own sample for a data-driven initialisation: ``examples`` examples in ``batches`` and
    the batch's mean loss ``loss_fn(model, batch)``."""

    batches: list[Any]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    examples: int


class GradientSum(NamedTuple):
    """Every node's uploaded summed raw gradient, summed on the server: ``{module: ΣG}`` ``(m, n)`` float64,
    over ``examples`` examples from ``nodes`` nodes."""

    gradients: dict[str, np.ndarray]
    examples: int
    nodes: int


class ServerSetup(NamedTuple):
    """What :meth:`AdapterKind.server_init` may use; built by ``server.adapter_setup``.

    ``calibration()`` draws the server's calibration sample; ``federated_gradients()`` asks every node
    for its summed gradient (the grid messaging and its metering stay in the server). Call at most one.
    """

    model: PeftModel
    config: RunConfig
    calibration: Callable[[], CalibrationSample]
    federated_gradients: Callable[[], GradientSum]
    learning_rate: float
    """The clients' AdamW rate for this run (``train.lr`` with ``auto`` resolved by the strategy)."""


class AdapterKind(ABC):
    """One adapter kind (``adapter.name``); subclass it and register the subclass.

    Class attributes
    ----------------
    name : str
        ``adapter.name``: lower-case, digits and ``-``; not ``auto``.
    paper : str
        The method's paper, ``"arXiv NNNN.NNNNN"``.
    summary : str
        One line for ``corolla adapters``.
    trains : str
        What trains, e.g. ``"B (+head)"``.
    frozen_layers : tuple[str, ...]
        PEFT adapter layers the kind freezes: they never travel with the payload and are sent once
        (``adapters.frozen``), e.g. ``("lora_A",)``.
    layout_keys : Mapping[str, str]
        Layout field -> PEFT layer of every *shipped* factor, e.g. ``{"a_key": "lora_A", "b_key": "lora_B"}``;
        ``adapters.payload.layout`` writes ``<module>.<layer>.weight`` under each field.
    layout_form : str
        The numpy-side form of those fields that strategies read (plain data; kinds with the same maths on
        the same fields share a form, e.g. LoRA and rsLoRA are both ``"pair"``).
    merged_export : bool
        Whether the export always writes ``merged/`` (the base with ``ΔW`` merged in), because the saved
        adapter needs Corolla's own layers to load.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    summary: ClassVar[str]
    trains: ClassVar[str]
    frozen_layers: ClassVar[tuple[str, ...]] = ()
    layout_keys: ClassVar[Mapping[str, str]]
    layout_form: ClassVar[str]
    merged_export: ClassVar[bool] = False

    # ---- building the model (torch side) ----------------------------------------------------------

    @abstractmethod
    def configure(self, config: LoraConfig, spec: AdapterSpec) -> LoraConfig:
        """Turn the plain ``LoraConfig`` built from ``spec`` (``r = spec.rank``) into this kind's, before
        ``get_peft_model``; may return a new config."""

    def finalize(self, model: PeftModel) -> None:
        """Edit the wrapped model right after ``get_peft_model`` (inside the caller's seeded RNG fork)."""

    def layers(self) -> frozenset[str]:
        """Every adapter layer a module of this kind holds: the shipped ones and the frozen ones."""
        return frozenset(self.layout_keys.values()) | frozenset(self.frozen_layers)

    def detect(self, config: LoraConfig, layer: LoraLayer) -> bool:
        """Whether ``layer`` (a LoRA module of a model built with ``config``) is of this kind.

        Default: it holds exactly :meth:`layers` and PEFT declares exactly ``frozen_layers`` frozen.
        A kind with the structure of another one overrides it (rsLoRA: ``config.use_rslora``).
        """
        return layer_names(layer) == self.layers() and frozen_layer_names(layer) == frozenset(self.frozen_layers)

    # ---- the server (before round 1, and after the last) --------------------------------------------

    def server_init(self, setup: ServerSetup) -> None:
        """Install the kind's initial factors into ``setup.model`` before the initial payload is taken
        (LoRA-SB: B, R0, A from a gradient estimate). Default: PEFT's initialisation stands."""

    def privacy_gaps(self, config: RunConfig) -> tuple[str, ...]:
        """What a DP run's ε does not cover because of this kind's set-up under ``config`` (logged and
        written to ``summary.json``). Default: nothing."""
        return ()

    def export_adapter(self, model: PeftModel, directory: Path) -> None:
        """Write the trained adapter where ``PeftModel.from_pretrained(base, directory)`` loads it."""
        unwrap(model).save_pretrained(str(directory))

    # ---- numpy side: the update as factors, its projection, its size ---------------------------------

    @abstractmethod
    def factored_update(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(left, right)`` with ``left @ right = ΔW_after − ΔW_before`` of ``module``, float64;
        ``left: (m, k)``, ``right: (k, n)``, k small. ``before``/``after`` are payloads, ``frozen`` the
        factors sent once (``adapters.frozen``), keyed ``<module>.<layer>.weight``."""

    def left_projected(
        self,
        module: str,
        entry: LayoutEntry,
        before: Arrays,
        after: Arrays,
        frozen: Arrays,
        project: Callable[[np.ndarray], np.ndarray],
    ) -> ProjectedUpdate | None:
        """The payload arrays of ``module`` whose update is ``project`` applied on the output side of the
        update (``project: (m, k) -> (m, k)`` linear), starting from ``before``. Default: None (this kind
        cannot re-express a projected update)."""
        return None

    @abstractmethod
    def module_params(self, m: int, n: int, spec: AdapterSpec) -> ModuleParams:
        """Parameters of one adapted ``(m, n)`` module under ``spec``: trained and frozen (head excluded)."""

    def __repr__(self) -> str:
        return f"<adapter kind {self.name!r} ({self.paper})>"
