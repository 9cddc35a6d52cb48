"""Simulations on an existing Ray cluster: ``corolla run --ray-address HOST:PORT``.

Flower 1.42's Ray backend (``RayBackend.init_ray``) calls ``ray.init(**init_args)`` in the
``flwr-simulation`` process, and the federation config's ``init-args`` only carry ``num-cpus``,
``num-gpus``, ``logging-level`` and ``log-to-driver``: there is no address field. ``ray.init``
without an address reads ``RAY_ADDRESS`` from its environment and joins that cluster, and the
``flwr-simulation`` process inherits its environment from the SuperLink that starts it. So joining a
cluster means: a SuperLink started with ``RAY_ADDRESS`` set (see ``docs/scaling.md`` for the plain
``flwr run`` recipe).

``corolla run --ray-address`` therefore

1. checks that something answers at the address (a TCP connect to the cluster's GCS port) before
   anything starts, and fails with a message saying how to start or find the cluster;
2. starts a SuperLink of its own for this run (its own ``FLWR_HOME`` and free ports, so a managed
   SuperLink already running without the address is never reused), with ``RAY_ADDRESS`` set;
3. runs ``flwr run`` against it and stops it afterwards.

Client resources (``--cpus-per-client``) are the federation's ``client-resources-num-cpus`` as
always; Ray places each ClientApp actor on any node of the cluster that has them free. Init args
that Ray refuses when joining a cluster (``num-cpus``/``num-gpus``) are never passed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from simulations.flower_env import flower_binary, flower_env

RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"  # read by ray.init() when called without an address
_PROBE_TIMEOUT_S = 3.0
_SUPERLINK_START_S = 60.0


class RayAddressError(ValueError):
    """``--ray-address`` is malformed or nothing answers there (the message says what to do)."""


def parse_ray_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` of a cluster's head (what ``ray start --head`` prints) as ``(host, port)``.

    Raises
    ------
    RayAddressError
        Not ``HOST:PORT``, or a Ray Client ``ray://`` address (Flower's backend runs its actors
        as a driver inside the cluster, not through Ray Client).
    """
    text = address.strip()
    if "://" in text:
        raise RayAddressError(
            f"--ray-address {address!r}: pass the head's GCS address HOST:PORT (e.g. 10.0.0.5:6379, "
            "what `ray start --head` prints), not a Ray Client ray:// address"
        )
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RayAddressError(
            f"--ray-address {address!r}: expected HOST:PORT of the cluster's head, e.g. 127.0.0.1:6379"
        )
    return host.strip("[]"), int(port_text)


def check_ray_address(address: str, *, timeout: float = _PROBE_TIMEOUT_S) -> None:
    """Fail early, with what to do, when nothing listens at the cluster's head address."""
    host, port = parse_ray_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise RayAddressError(
            f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}). Start one with "
            f"`ray start --head --port {port}` on {host}, or pass the address that `ray status` "
            "prints on the head node"
        ) from exc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0) as reply:
            return bool(200 <= reply.status < 300)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def superlink_on_cluster(
    address: str, base_env: Mapping[str, str] | None = None, *, cwd: Path | None = None
) -> Iterator[dict[str, str]]:
    """A SuperLink (simulation mode, loopback, its own ``FLWR_HOME`` and ports) whose simulations
    join the Ray cluster at ``address``; yields the environment for ``flwr run`` to use it.

    The SuperLink is this context's child, works in ``cwd`` (the app's directory: its simulation
    processes import from there, ``simulations.flower_env.check_managed_superlink``) and is stopped on exit.
    """
    check_ray_address(address)
    with tempfile.TemporaryDirectory(prefix="corolla-ray-") as home:
        api_port, control_port = _free_port(), _free_port()
        env = flower_env({
            **(dict(base_env) if base_env is not None else os.environ),
            "FLWR_HOME": home,
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(api_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
            RAY_ADDRESS_VARIABLE: address.strip(),
        })
        log = Path(home) / "superlink.log"
        cmd = [
            flower_binary("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
            "--control-api-address", f"127.0.0.1:{control_port}", "--host", "127.0.0.1",
            "--port", str(api_port), "--database", str(Path(home) / "state.db"),
        ]
        with log.open("wb") as sink:
            proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            deadline = time.monotonic() + _SUPERLINK_START_S
            while not _healthy(api_port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the SuperLink for the Ray cluster did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield env
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
