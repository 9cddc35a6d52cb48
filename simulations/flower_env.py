"""The environment and executables of every Flower process Corolla starts (``flwr run``, SuperLink,
SuperNodes, SuperExecs), in one place for the simulation launcher and the deployment topology.

What every process gets:

* runtime dependency installation off (``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION``): runs work
  offline and never reinstall torch;
* this environment's ``bin/`` first on ``PATH``: Flower's processes start ``flwr-serverapp``,
  ``flwr-clientapp`` and ``flwr-simulation`` by name, and must find this environment's even when it
  was never activated (``.venv/bin/python -m pytest``);
* offline Hugging Face, no update checks, no tokenizer thread pools, unbuffered output (logs arrive
  as they are written), and Ray's accelerator variables left alone on CPU-only nodes.

``managed``: Corolla's own local SuperLink for ``corolla run`` (its own ``FLWR_HOME``, default
``~/.corolla/flwr`` or ``$COROLLA_FLWR_HOME``, and its own ports, apart from Flower's defaults). A
named ``--connection`` or a deployment topology lives in a ``FLWR_HOME`` of its own and passes
``managed=False``. ``threads`` caps the BLAS/OpenMP threads of every process (unless already set),
for many processes sharing few cores.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

DEFAULT_SUPERLINK_PORT = 39191  # Corolla's managed SuperLink; Flower's own default is 39091
DEFAULT_CONTROL_PORT = 39193
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def flower_env(
    base: Mapping[str, str] | None = None, *, managed: bool = True, threads: int | None = None
) -> dict[str, str]:
    """The environment for a Flower process: ``base`` (default: ``os.environ``) plus the settings in
    the module docstring; explicit values in ``base`` win except the two every run needs."""
    env = dict(os.environ if base is None else base)
    if managed:
        home = Path(env["HOME"]) if "HOME" in env else Path.home()
        env.setdefault("FLWR_HOME", env.get("COROLLA_FLWR_HOME", str(home / ".corolla" / "flwr")))
        env.setdefault("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", str(DEFAULT_SUPERLINK_PORT))
        env.setdefault("FLWR_LOCAL_CONTROL_API_PORT", str(DEFAULT_CONTROL_PORT))
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join([bindir, *filter(None, [env.get("PATH", "")])])
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if threads is not None:
        for name in _THREAD_VARIABLES:
            env.setdefault(name, str(threads))
    return env


def flower_binary(name: str) -> str:
    """The Flower executable ``name`` (``flwr``, ``flower-superlink``, ...) next to the running
    interpreter (this environment), else on ``PATH``.

    Raises
    ------
    FileNotFoundError
        Neither exists; the message says to install flwr in this environment.
    """
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` not found: install flwr in this environment (pip install flwr)")
    return found


class ForeignSuperLink(RuntimeError):
    """The managed local SuperLink that ``flwr run`` would reuse was started from another directory."""


def check_managed_superlink(app_dir: Path, env: Mapping[str, str]) -> None:
    """Refuse to reuse a managed SuperLink started from another directory than ``app_dir``.

    ``flwr run`` reuses whatever local SuperLink answers on ``FLWR_LOCAL_CONTROL_API_PORT``, and the
    simulation processes it starts (the Ray workers that run the ClientApps) work in *its* directory,
    which comes first on their import path: with two checkouts of Corolla, a run from the second one
    trains with the first one's modules (seen here: a schema change missing on the clients' side
    failed every reply). Nothing listening, or a SuperLink of this directory, is fine.

    Raises
    ------
    ForeignSuperLink
        Naming the other directory, the process and how to stop it.
    """
    import psutil

    port = int(env.get("FLWR_LOCAL_CONTROL_API_PORT", DEFAULT_CONTROL_PORT))
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # macOS without root: cannot tell, leave it to Flower
        return
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port or conn.pid is None:
            continue
        try:
            proc = psutil.Process(conn.pid)
            cwd = Path(proc.cwd()).resolve()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return  # cannot tell: leave it to Flower
        if cwd != Path(app_dir).resolve():
            raise ForeignSuperLink(
                f"a local SuperLink started from {cwd} (pid {conn.pid}) answers on port {port}; `flwr run` would "
                f"reuse it, and its simulation processes import that directory's modules, not {Path(app_dir).resolve()}'s. "
                f"Stop it (kill {conn.pid}) or run from {cwd}; two checkouts at once need their own ports "
                "(FLWR_LOCAL_SUPERLINK_HTTP_API_PORT, FLWR_LOCAL_CONTROL_API_PORT) and FLWR_HOME."
            )
        return
