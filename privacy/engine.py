"""DP-SGD for one client round: the only place Corolla calls Opacus's ``make_private``.

:func:`privatize` takes the plain model and optimizer of the local loop and returns one
:class:`PrivateTraining`: the model wrapped in Opacus's ``GradSampleModule`` (hooks mode: per-example
gradients of the *trainable* tensors only, i.e. LoRA A and B, FFA-LoRA's B, LoRA-SB's R and a
trained head; frozen weights get none), a ``DPOptimizer`` that clips each per-example gradient to C
and adds ``N(0, σ²C²)`` before the wrapped optimizer's step (Abadi et al. 2016, arXiv 1607.00133,
Alg. 1), a Poisson-sampled loader of example *indices* (the loop collates its own rows), and an
accountant already holding this client's history from earlier rounds (``privacy.accounting``).

σ is either ``privacy.noise-multiplier`` or calibrated once to ``privacy.target-epsilon`` over the
whole planned run, ``planned_rounds × steps`` steps at ``q = 1 / ceil(n / batch_size)`` (Opacus's
sample rate, one "epoch" = ``len(loader)`` steps). The assumption is stated by the caller: a client
that trains in every round has ``planned_rounds = num-server-rounds``; one that is sampled with
probability p may plan fewer. σ is deterministic in these inputs, so every round of a run recomputes
the same σ, and a round beyond the plan is refused (:class:`privacy.BudgetExhausted`).

Opacus's wrapper prefixes state-dict keys with ``_module.``; that is handled here and nowhere else:
:attr:`PrivateTraining.model` and :meth:`PrivateTraining.close` hand back the unwrapped model, and
``adapters`` refuses anything that is not a PEFT model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from flwr.app import RecordDict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if TYPE_CHECKING:  # Opacus loads when a DP round starts (privatize): never on a client without DP
    from privacy._opacus import DPOptimizer, GradSampleModule, IAccountant
from privacy.accounting import (
    calibrate_noise,
    check_budget,
    epsilon_of,
    load_history,
    make_accountant,
    save_history,
)
from privacy.config import DPConfig

_OPACUS_MODULE_ATTRS = ("activations", "max_batch_len")  # left on submodules by an interrupted step


@dataclass
class PrivateTraining:
    """Everything a DP-SGD round needs, from one :func:`privatize` call.

    The loop MUST use ``module`` and ``optimizer`` in place of the plain ones, take its batches from
    :meth:`index_batches`, call :meth:`noise_only_step` for an empty Poisson batch, :meth:`save` the
    accountant to ``Context.state`` once the round succeeded, and :meth:`close` (or use ``with``).

    Attributes
    ----------
    module : GradSampleModule
        The wrapped model; call it like the model (``module(input_ids=...)``).
    optimizer : DPOptimizer
        Clips, noises, scales by the expected batch size, then steps the wrapped optimizer.
    data_loader : DataLoader
        Yields ``(indices,)`` of the client's examples; Poisson-sampled unless disabled.
    accountant : IAccountant
        Opacus accountant with the earlier rounds' history; every optimizer step is recorded.
    noise_multiplier : float
        σ used this round.
    delta : float
        δ that ε is reported at.
    sample_rate : float
        q, the probability that an example joins a step.
    max_grad_norm : float
        C, the per-example clip norm.
    target_epsilon : float or None
        The run's budget, when σ was calibrated to it.
    """

    module: GradSampleModule
    optimizer: DPOptimizer
    data_loader: DataLoader
    accountant: IAccountant
    noise_multiplier: float
    delta: float
    sample_rate: float
    max_grad_norm: float
    target_epsilon: float | None = None
    mechanism: str = "rdp"
    _closed: bool = field(default=False, repr=False)

    @property
    def model(self) -> nn.Module:
        """The unwrapped model (what ``adapters.payload`` sees; no ``_module.`` prefix)."""
        inner: nn.Module = self.module._module
        return inner

    def index_batches(self, steps: int) -> Iterator[np.ndarray]:
        """``steps`` batches of example indices (int64 arrays; Poisson batches may be empty)."""
        done = 0
        while done < steps:
            for (indices,) in self.data_loader:
                yield indices.numpy().astype(np.int64, copy=False)
                done += 1
                if done == steps:
                    return

    def noise_only_step(self) -> None:
        """The step of an empty Poisson batch: no gradient, only noise ``N(0, σ²C²)/E[B]``, accounted.

        Skipping it instead would reveal that the batch was empty and break the accountant's
        assumption that every step releases a noised sum.
        """
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()

    def epsilon(self) -> float:
        """ε at ``delta`` over all rounds so far, this one's steps included."""
        return epsilon_of(self.accountant.history, mechanism=self.mechanism, delta=self.delta)

    def save(self, state: RecordDict) -> float:
        """Write the accountant history to ``state`` (``Context.state``); returns :meth:`epsilon`."""
        save_history(state, self.accountant.history, mechanism=self.mechanism)
        return self.epsilon()

    def close(self) -> nn.Module:
        """Remove Opacus's hooks and per-parameter attributes; returns the unwrapped model.

        Idempotent. Afterwards the model is a plain PEFT model again (a cached worker model can
        serve the next client or a plain round).
        """
        inner = self.model
        if not self._closed:
            self.module._close()  # removes hooks, grad_sample and counters from the parameters
            for sub in inner.modules():
                for attr in _OPACUS_MODULE_ATTRS:
                    if attr in sub.__dict__:
                        delattr(sub, attr)
            self._closed = True
        return inner

    def __enter__(self) -> PrivateTraining:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def index_loader(num_examples: int, *, batch_size: int, shuffle: bool) -> DataLoader:
    """A loader of example indices ``0..n-1`` in batches of ``min(batch_size, n)``."""
    if num_examples < 1:
        raise ValueError("this client's data partition is empty; DP-SGD needs at least one example")
    if batch_size < 1:
        raise ValueError(f"`train.batch-size` = {batch_size} must be >= 1")
    dataset = TensorDataset(torch.arange(num_examples, dtype=torch.int64))
    return DataLoader(dataset, batch_size=min(batch_size, num_examples), shuffle=shuffle)


def sample_rate_for(num_examples: int, *, batch_size: int) -> float:
    """Opacus's sample rate for this loader: ``1 / ceil(n / min(batch_size, n))``."""
    return 1.0 / math.ceil(num_examples / min(batch_size, num_examples))


def _check_trainable(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not trainable:
        raise ValueError("the model has no trainable parameters; the adapter was not applied")
    if trainable != in_optimizer:
        raise ValueError(
            "DP-SGD needs the optimizer to hold exactly the model's trainable parameters (the adapter and "
            f"head): it holds {len(in_optimizer)} tensors, the model has {len(trainable)} trainable; frozen "
            "tensors must not be optimised and every trainable one must be clipped and noised"
        )


def resolve_noise(
    config: DPConfig, *, delta: float, sample_rate: float, steps: int, planned_rounds: int
) -> float:
    """σ for this run: ``privacy.noise-multiplier``, or calibrated to ``privacy.target-epsilon`` over
    ``planned_rounds × steps`` steps."""
    if config.noise_multiplier is not None:
        return config.noise_multiplier
    assert config.target_epsilon is not None  # DPConfig guarantees exactly one
    return calibrate_noise(
        target_epsilon=config.target_epsilon,
        delta=delta,
        sample_rate=sample_rate,
        total_steps=planned_rounds * steps,
        mechanism=config.accountant,
    )


def privatize(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    config: DPConfig,
    num_examples: int,
    batch_size: int,
    steps: int,
    planned_rounds: int,
    state: RecordDict | None = None,
) -> PrivateTraining:
    """Make one client round DP-SGD (Opacus ``make_private``, hooks mode).

    Parameters
    ----------
    model : nn.Module
        The PEFT model; its ``requires_grad`` tensors are exactly what is clipped and noised.
    optimizer : torch.optim.Optimizer
        Built over exactly the trainable tensors; it is wrapped, not copied.
    config : DPConfig
        ``privacy.*``; MUST be enabled.
    num_examples : int
        n, the client's training examples (sets q and the default δ).
    batch_size : int
        Expected batch size; ``q = 1 / ceil(n / batch_size)``.
    steps : int
        DP-SGD steps this round (``train.local-steps``).
    planned_rounds : int
        Rounds this client is planned to train in (``num-server-rounds`` if it trains every round);
        the ε budget is spread over ``planned_rounds × steps`` steps.
    state : RecordDict, optional
        The client's ``Context.state``; the accountant history of earlier rounds is read from it
        (nothing is written until :meth:`PrivateTraining.save`).

    Raises
    ------
    BudgetExhausted
        With ``target_epsilon`` set, if this round would take ε past it; nothing is wrapped then.
    """
    if not config.enabled:
        raise ValueError("privatize() called with `privacy.enabled` = false")
    if steps < 1 or planned_rounds < 1:
        raise ValueError(f"steps ({steps}) and planned_rounds ({planned_rounds}) must be >= 1")
    _check_trainable(model, optimizer)
    delta = config.delta_for(num_examples)
    loader = index_loader(num_examples, batch_size=batch_size, shuffle=not config.poisson_sampling)
    sample_rate = 1.0 / len(loader)
    noise = resolve_noise(config, delta=delta, sample_rate=sample_rate, steps=steps, planned_rounds=planned_rounds)
    history = load_history(state, mechanism=config.accountant) if state is not None else []
    if config.target_epsilon is not None:
        check_budget(
            history,
            mechanism=config.accountant,
            delta=delta,
            target_epsilon=config.target_epsilon,
            noise_multiplier=noise,
            sample_rate=sample_rate,
            steps=steps,
        )
    from privacy._opacus import PrivacyEngine

    try:
        with warnings.catch_warnings():  # "Secure RNG turned off": documented at privacy.secure-mode
            warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
            engine = PrivacyEngine(accountant=config.accountant, secure_mode=config.secure_mode)
    except ImportError as exc:
        raise ImportError(f"`privacy.secure-mode` = true needs torchcsprng ({exc}); install it or set it to false") from exc
    engine.accountant = make_accountant(config.accountant, history)
    module, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise,
        max_grad_norm=config.max_grad_norm,
        poisson_sampling=config.poisson_sampling,
        grad_sample_mode="hooks",
        loss_reduction="mean",
        batch_first=True,
        clipping="flat",
    )
    return PrivateTraining(
        module=module,
        optimizer=dp_optimizer,
        data_loader=dp_loader,
        accountant=engine.accountant,
        noise_multiplier=noise,
        delta=delta,
        sample_rate=sample_rate,
        max_grad_norm=config.max_grad_norm,
        target_epsilon=config.target_epsilon,
        mechanism=config.accountant,
    )
