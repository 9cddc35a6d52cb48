"""What the round loop starts from: a fresh run and a resumed run differ only in these values.

:meth:`RunState.fresh` runs the adapter kind's server-side set-up (LoRA-SB: B, R0 and A before the
initial payload is taken; its set-up traffic is metered as round 0) and starts from round 0 with
an empty ledger, no rows, Python's ``random`` seeded with ``seed`` (Flower samples nodes with it)
and no plugin broadcast. :meth:`RunState.resumed` takes all of it from a checkpoint
(``server.checkpoint``) instead: the frozen factors it saved are installed (never re-running a set-up
that may have asked clients), and the loop continues after the checkpoint's round in the same run
folder. Either way the loop, the wrappers and the recorder run the same code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from adapters.frozen import frozen_factors, load_frozen_factors
from adapters.payload import extract
from client.tasks.setup import TaskAndModel
from contract import RunConfig
from server.adapter_setup import initialise_adapter
from server.checkpoint import Checkpoint, CheckpointError, check_compatible, check_rounds_left
from server.epsilon_ledger import EpsilonLedger, NodeEpsilon
from server.metering import ByteLedger
from server.run_folder import RunFolder
from strategies.protocol import CorollaStrategy, StrategyState


@dataclass
class RunState:
    """The values the round loop starts from (module docstring).

    ``round_offset`` rounds are done (0 for a fresh run); ``start_arrays`` is the global payload of
    the next round; ``ledger`` and ``rows`` hold the metered messages and the recorded rows so far;
    ``rng_state`` is Python's ``random`` state the loop starts with; ``broadcast`` the task plugin's
    latest broadcast; ``strategy_state`` what the strategy exported at the checkpoint (``None``:
    a fresh strategy); ``folder`` the run folder to continue (``None``: create one).
    """

    round_offset: int
    start_arrays: dict[str, np.ndarray]
    ledger: ByteLedger
    rows: list[dict[str, Any]]
    rng_state: Any
    broadcast: dict[str, Any] | None = None
    strategy_state: StrategyState | None = None
    folder: Path | None = None
    epsilon_nodes: dict[int, NodeEpsilon] | None = None  # the per-node ε ledger at the checkpoint (DP runs)

    @classmethod
    def fresh(cls, config: RunConfig, built: TaskAndModel, grid: Grid, adapter_kind: str) -> RunState:
        """Round 0: run the adapter kind's server-side set-up, then take the initial payload."""
        ledger = ByteLedger()
        initialise_adapter(
            adapter_kind, model=built.model, task=built.task, tokenizer=built.tokenizer, datasets=built.datasets,
            config=config, grid=grid, ledger=ledger,
        )
        return cls(
            round_offset=0,
            start_arrays=extract(built.model),
            ledger=ledger,
            rows=[],
            rng_state=random.Random(config.seed).getstate(),  # = random.seed(config.seed)
        )

    @classmethod
    def resumed(cls, checkpoint: Checkpoint, built: TaskAndModel, folder: Path) -> RunState:
        """After the checkpoint's round, in ``folder``: its frozen factors installed in ``built.model``.

        Raises
        ------
        server.checkpoint.CheckpointError
            The checkpoint's global or frozen arrays do not fit the model this config builds.
        """
        check_fits(checkpoint.global_arrays, extract(built.model), what="global adapter (`global/*`)")
        check_fits(checkpoint.frozen, frozen_factors(built.model), what="frozen factors (`frozen/*`)")
        load_frozen_factors(built.model, checkpoint.frozen)
        epsilon_nodes = EpsilonLedger.nodes_from_state(checkpoint.epsilon_ledger or {})  # checked when read
        return cls(
            round_offset=checkpoint.server_round,
            start_arrays=checkpoint.global_arrays,
            ledger=ByteLedger(rows=list(checkpoint.ledger)),
            rows=list(checkpoint.rows),
            rng_state=checkpoint.rng_state,
            broadcast=checkpoint.broadcast,
            strategy_state=StrategyState(checkpoint.strategy_arrays, checkpoint.strategy_meta),
            folder=folder,
            epsilon_nodes=epsilon_nodes,
        )

    def restore(self, strategy: CorollaStrategy) -> None:
        """Give ``strategy`` the state it exported at the checkpoint (a fresh strategy keeps its own).

        Raises
        ------
        server.checkpoint.CheckpointError
            The strategy cannot read its saved state (``strategy/*``, the ``strategy`` metadata).
        """
        if self.strategy_state is not None:
            try:
                strategy.restore_state(self.strategy_state.arrays, self.strategy_state.meta)
            except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                raise CheckpointError(
                    f"the checkpoint's strategy state (`strategy/*` and its metadata) cannot be restored into "
                    f"{type(strategy).__name__} ({type(exc).__name__}: {exc}); the checkpoint was damaged or edited"
                ) from exc

    def open_folder(self, config: RunConfig) -> RunFolder:
        """The run folder: the checkpoint's, cut back to its rows, or a new one under ``output-dir``."""
        if self.folder is not None:
            return RunFolder.reopen(self.folder, config, self.rows)
        return RunFolder.create(config)

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` says about where the run started (nothing for a fresh run)."""
        return {"resumed_after_round": self.round_offset} if self.folder is not None else {}


def load_checkpoint(config: RunConfig) -> Checkpoint | None:
    """The checkpoint ``resume-from`` names, checked against ``config`` (``None``: a fresh run).

    Raises
    ------
    server.checkpoint.CheckpointError
        No readable checkpoint there, or a config that would not continue the same run.
    """
    if not config.resume_from:
        return None
    checkpoint = Checkpoint.load(Path(config.resume_from).expanduser())
    check_compatible(checkpoint.config, config.to_flat())
    check_rounds_left(checkpoint.server_round, config.num_server_rounds)
    return checkpoint


def check_fits(saved: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, what: str) -> None:
    """Refuse saved arrays whose keys, shapes or dtypes differ from what this run's model has.

    Raises
    ------
    server.checkpoint.CheckpointError
        Naming the missing and unexpected keys and the first mismatched arrays.
    """
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    wrong = [
        f"`{key}` is {saved[key].dtype}{tuple(saved[key].shape)}, the model has {value.dtype}{tuple(value.shape)}"
        for key, value in expected.items() if key in saved
        and (tuple(saved[key].shape) != tuple(value.shape) or saved[key].dtype != value.dtype)
    ]
    if missing or extra or wrong:
        parts = ([f"missing {missing[:5]}"] if missing else []) + ([f"unexpected {extra[:5]}"] if extra else []) + wrong[:5]
        raise CheckpointError(
            f"the checkpoint's {what} do not fit the model this config builds: {'; '.join(parts)}. The checkpoint was "
            "damaged, edited, or written with another model or adapter"
        )

