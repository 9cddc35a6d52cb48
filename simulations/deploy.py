"""The deployment topology as plain processes: one SuperLink, N SuperNodes, their SuperExecs.

This is ``docker/compose.yml`` without Docker, on one machine (loopback by default), with the same
security: TLS everywhere (the SuperLink's Fleet/Control/Runtime port and each SuperNode's Runtime
API), SuperNode authentication (each node's ECDSA P-384 key registered with
``flwr supernode register``), and on every Runtime API a SuperExec secret of its own (the
SuperLink's and each SuperNode's, shared only with that API's SuperExec). Certificates and
keys come from ``docker/make-certs.sh``, the same script the Docker deployment uses.

    python -m simulations.deploy up --nodes 2 --dir /tmp/corolla-deploy   # start, register, wait online
    export FLWR_HOME=/tmp/corolla-deploy/cli-home                          # the CLI's TLS connection
    flwr run . corolla-deploy --stream --run-config "output-dir='$PWD/runs'"
    python -m simulations.deploy down --dir /tmp/corolla-deploy           # stop every process

``up --warm-workers`` also starts each node's warm worker (``python -m client.node_worker``, holding
the base model and task data across messages; ``docs/scaling.md §3``) before its SuperNode, and gives
the SuperNode ``worker-socket`` in its node config.

From Python::

    with Topology(Path("/tmp/x"), nodes=2) as topo:
        topo.start()
        result = launch(app_dir, overrides, num_supernodes=2, connection=topo.connection, env=topo.cli_env())

Nothing here imports Corolla's apps: the processes run whatever FAB ``flwr run`` sends them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.flower_env import flower_binary, flower_env

CONNECTION = "corolla-deploy"
CODE_ROOT = Path(__file__).resolve().parent.parent  # the checkout: the node workers import Corolla from here
MAKE_CERTS = CODE_ROOT / "docker" / "make-certs.sh"
RUNNING_LOG = re.compile(r"Uvicorn running on https://")
WORKER_LISTENING_LOG = re.compile(r"node worker \d+ listening on ")


class DeploymentError(RuntimeError):
    """A component did not come up (the message names it and quotes its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host`` (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_certs(out: Path, nodes: int, extra_names: Sequence[str] = (), *, script: Path = MAKE_CERTS) -> None:
    """Run ``docker/make-certs.sh``: CA, SuperLink and SuperNode certificates, node keys, SuperExec secret."""
    if not script.is_file():
        raise DeploymentError(f"{script} not found: run from a Corolla checkout (the script lives in docker/)")
    cmd = ["bash", str(script), "-n", str(nodes), "-o", str(out)]
    for name in extra_names:
        cmd += ["-H", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise DeploymentError(f"make-certs.sh failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path) -> Path:
    """A ``flwr`` CLI connection (the default one) in ``flwr_home/config.toml``; returns the file."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f'[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{root_certificates.resolve()}"\n'
    )
    return path


@dataclass
class Component:
    """One started process: its name, the Popen handle and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None


SUPEREXEC_TASK_POLL_S = "0.1"  # Flower's default is 1 s (FLWR_SUPEREXEC_TASK_POLL_INTERVAL; docs/scaling.md §3)


def superexec_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a SuperExec: it looks for new tasks every 0.1 s instead of Flower's 1 s, unless the
    caller set ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (measured: 0.7 s less per deployed round)."""
    return {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": SUPEREXEC_TASK_POLL_S, **env}


@dataclass
class Topology:
    """SuperLink + ``nodes`` SuperNodes + one SuperExec each, under ``root``.

    ``root`` holds ``certs/``, ``keys/`` (from make-certs.sh), ``logs/<component>.log``, a Flower
    home per component (``homes/``) and the CLI's own ``cli-home/config.toml``; with
    ``warm_workers``, ``workers/node-<i>.sock`` and ``workers/node-<i>.json`` (the worker's status:
    requests served, connections refused, model builds). ``stop()`` (also on
    leaving the ``with`` block) ends every process this object started, with its children.
    """

    root: Path
    nodes: int = 2
    host: str = "127.0.0.1"
    superexec_auth: bool = True
    warm_workers: bool = False
    env: dict[str, str] = field(default_factory=lambda: flower_env(managed=False))
    components: list[Component] = field(default_factory=list)
    superlink_port: int = 0
    node_ports: list[int] = field(default_factory=list)

    # -- paths -----------------------------------------------------------------------------------
    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def cli_home(self) -> Path:
        return self.root / "cli-home"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.superlink_port}"

    @property
    def connection(self) -> str:
        return CONNECTION

    def cli_env(self) -> dict[str, str]:
        """The environment for the ``flwr`` CLI: its own ``FLWR_HOME`` with the TLS connection."""
        return {**self.env, "FLWR_HOME": str(self.cli_home)}

    # -- life cycle ------------------------------------------------------------------------------
    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, timeout: float = 60.0) -> None:
        """Certificates, SuperLink, ServerApp SuperExec, registered SuperNodes and their SuperExecs;
        returns once every node is ``online``."""
        self.root.mkdir(parents=True, exist_ok=True)
        make_certs(self.root, self.nodes)
        self.superlink_port = self.superlink_port or free_port(self.host)
        write_connection(self.cli_home, CONNECTION, self.address, self.certs / "ca.crt")
        self.start_superlink(timeout=timeout)
        self.start_superexec("superexec-serverapp", self.address)
        for i in range(1, self.nodes + 1):
            if self.warm_workers:
                self.start_node_worker(i, timeout=timeout)
            self.register(self.keys / f"supernode-{i}.pub")
            port = free_port(self.host)
            self.node_ports.append(port)
            self.start_supernode(i, port=port)
            self.start_superexec(f"superexec-clientapp-{i}", f"{self.host}:{port}", ca=self.certs / "ca.crt",
                                 runtime_api=str(i))
        self.wait_nodes_online(self.nodes, timeout=timeout)

    def spawn(self, name: str, cmd: list[str], *, home: Path | None = None, cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> Component:
        """Start ``cmd`` in its own session (so ``stop`` can end its children too), logging to a file;
        ``env`` replaces the topology's environment for this process."""
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        env = dict(self.env if env is None else env)
        if home is not None:
            home.mkdir(parents=True, exist_ok=True)
            env["FLWR_HOME"] = str(home)
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd or self.root, start_new_session=True
            )
        component = Component(name, proc, log)
        self.components.append(component)
        return component

    def _secret_flags(self, runtime_api: str) -> list[str]:
        """The SuperExec secret of one Runtime API (``superlink`` or a node's number): each is shared
        only by that API and its own SuperExec (docker/README.md "Threat model")."""
        if not self.superexec_auth:
            return []
        return ["--superexec-auth-secret-file", str(self.keys / f"superexec-secret-{runtime_api}")]

    def superlink_command(self) -> list[str]:
        """``flower-superlink``: TLS, SuperNode auth, process isolation, no runtime installs."""
        certs = self.certs
        return [
            flower_binary("flower-superlink"),
            "--ssl-ca-certfile", str(certs / "ca.crt"),
            "--ssl-certfile", str(certs / "superlink.crt"),
            "--ssl-keyfile", str(certs / "superlink.key"),
            "--enable-supernode-auth",
            "--isolation", "process",
            "--disable-runtime-dependency-installation",
            "--host", self.host,
            "--port", str(self.superlink_port),
            *self._secret_flags("superlink"),
        ]

    def start_superlink(self, *, timeout: float = 60.0) -> Component:
        component = self.spawn("superlink", self.superlink_command(), home=self.root / "homes" / "superlink")
        wait_for_log(component, RUNNING_LOG, timeout=timeout)
        return component

    def superexec_command(self, runtime_address: str, *, ca: Path | None = None, runtime_api: str = "superlink") -> list[str]:
        """``flower-superexec`` against a Runtime API (``runtime_api``: ``superlink`` or a node's number), over TLS."""
        return [
            flower_binary("flower-superexec"),
            "--runtime-api-address", runtime_address,
            "--root-certificates", str(ca or self.certs / "ca.crt"),
            *self._secret_flags(runtime_api),
        ]

    def start_superexec(
        self, name: str, runtime_address: str, *, ca: Path | None = None, runtime_api: str = "superlink"
    ) -> Component:
        return self.spawn(name, self.superexec_command(runtime_address, ca=ca, runtime_api=runtime_api),
                          home=self.root / "homes" / name, env=superexec_env(self.env))

    def worker_socket(self, i: int) -> Path:
        """Node ``i``'s worker socket (short: Unix socket paths are limited to 107 bytes)."""
        return self.root / "workers" / f"node-{i}.sock"

    def worker_status(self, i: int) -> dict[str, Any]:
        """Node ``i``'s worker status file: pid, requests, refused, model_builds."""
        return dict(json.loads((self.root / "workers" / f"node-{i}.json").read_text()))

    def node_worker_command(self, i: int) -> list[str]:
        """``python -m client.node_worker`` for node ``i``."""
        return [sys.executable, "-m", "client.node_worker", "--socket", str(self.worker_socket(i)),
                "--status-file", str(self.root / "workers" / f"node-{i}.json")]

    def start_node_worker(self, i: int, *, timeout: float = 60.0) -> Component:
        """Start node ``i``'s warm worker (from the checkout) and wait until it listens."""
        component = self.spawn(f"node-worker-{i}", self.node_worker_command(i), cwd=CODE_ROOT)
        wait_for_log(component, WORKER_LISTENING_LOG, timeout=max(timeout, 300.0))  # imports torch: slow on a busy box
        return component

    def stop_node_workers(self) -> None:
        """Stop every node worker (their ClientApps fall back to in-process work)."""
        workers = [c for c in self.components if c.name.startswith("node-worker-")]
        for comp in workers:
            _signal_group(comp.proc, signal.SIGTERM)
        for comp in workers:
            try:
                comp.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(comp.proc, signal.SIGKILL)
                comp.proc.wait(timeout=5)
            self.components.remove(comp)

    def supernode_command(
        self, i: int, *, port: int, key: Path | None = None, ca: Path | None = None, max_wait_time: float | None = None
    ) -> list[str]:
        """The ``flower-supernode`` command line of node ``i`` (partition ``i-1`` of ``nodes``)."""
        cmd = [
            flower_binary("flower-supernode"),
            "--superlink", self.address,
            "--root-certificates", str(ca or self.certs / "ca.crt"),
            "--auth-supernode-private-key", str(key or self.keys / f"supernode-{i}"),
            "--isolation", "process",
            "--host", self.host,
            "--port", str(port),
            "--ssl-ca-certfile", str(self.certs / "ca.crt"),
            "--ssl-certfile", str(self.certs / f"supernode-{i}.crt"),
            "--ssl-keyfile", str(self.certs / f"supernode-{i}.key"),
            "--node-config", self.node_config(i),
            *self._secret_flags(str(i)),
        ]
        if max_wait_time is not None:
            cmd += ["--max-wait-time", str(max_wait_time)]
        return cmd

    def node_config(self, i: int) -> str:
        """Node ``i``'s ``--node-config``: its partition, its state folder, and its worker's socket with warm workers."""
        # state-dir: where the node's ClientApps (or its worker) keep its DP accountant history (docs/privacy.md §11)
        # (a path must be quoted: Flower parses node config as TOML values, and an unquoted path is none)
        config = f'partition-id={i - 1} num-partitions={self.nodes} state-dir="{self.root / "node-state" / str(i)}"'
        return f'{config} worker-socket="{self.worker_socket(i)}"' if self.warm_workers else config

    def start_supernode(self, i: int, *, port: int, name: str | None = None, **kwargs: Any) -> Component:
        return self.spawn(name or f"supernode-{i}", self.supernode_command(i, port=port, **kwargs),
                          home=self.root / "homes" / (name or f"supernode-{i}"))

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this topology."""
        return subprocess.run(
            [flower_binary("flwr"), *args], env=self.cli_env(), capture_output=True, text=True, timeout=timeout, cwd=self.root
        )

    def register(self, public_key: Path) -> int:
        """``flwr supernode register``; returns the node id."""
        out = self.flwr("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        payload = _json_in(out.stdout)
        if out.returncode != 0 or not payload.get("success", False):
            raise DeploymentError(f"registering {public_key} failed: {out.stdout}{out.stderr}")
        return int(payload["node-id"])

    def node_statuses(self) -> list[str]:
        """The ``status`` of every SuperNode the SuperLink knows (``registered``, ``online``, ...)."""
        out = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        return [str(n.get("status")) for n in _json_in(out.stdout).get("nodes", [])]

    def wait_nodes_online(self, count: int, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        statuses: list[str] = []
        while time.monotonic() < deadline:
            statuses = self.node_statuses()
            if statuses.count("online") >= count:
                return
            for comp in self.components:
                if not comp.alive():
                    raise DeploymentError(f"{comp.name} exited ({comp.proc.returncode}):\n{comp.log_text()[-3000:]}")
            time.sleep(1.0)
        raise DeploymentError(f"{count} SuperNodes not online after {timeout:.0f} s: {statuses}")

    def stop(self, *, grace: float = 10.0) -> None:
        """End every started process and its children: SIGTERM to each session, then SIGKILL."""
        for comp in reversed(self.components):
            _signal_group(comp.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for comp in reversed(self.components):
            try:
                comp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(comp.proc, signal.SIGKILL)  # stragglers and any children left in the group
            try:
                comp.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.components.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # the session started for this process: it and its children
    except (ProcessLookupError, PermissionError):
        pass


def _json_in(text: str) -> dict[str, Any]:
    try:
        return dict(json.loads(text[text.index("{"):]))
    except ValueError:
        return {}


def wait_for_log(component: Component, pattern: re.Pattern[str], *, timeout: float) -> str:
    """Wait until ``component``'s log matches ``pattern``; raise with the log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = component.log_text()
        if pattern.search(text):
            return text
        if not component.alive():
            raise DeploymentError(f"{component.name} exited ({component.proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.2)
    raise DeploymentError(f"{component.name}: no {pattern.pattern!r} after {timeout:.0f} s:\n{component.log_text()[-3000:]}")


# -- command line ------------------------------------------------------------------------------
PIDFILE = "pids.json"


def _up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    topo = Topology(root, nodes=args.nodes, host=args.host, warm_workers=args.warm_workers)
    topo.superlink_port = args.port
    try:
        topo.start()
    except Exception:
        topo.stop()
        raise
    (root / PIDFILE).write_text(json.dumps({c.name: c.proc.pid for c in topo.components}, indent=1))
    print(f"SuperLink https://{topo.address}, {args.nodes} SuperNodes online; logs in {root / 'logs'}")
    print(f"export FLWR_HOME={topo.cli_home}   # connection `{CONNECTION}` (TLS, CA {topo.certs / 'ca.crt'})")
    print(f"flwr run . {CONNECTION} --stream --run-config \"output-dir='$PWD/runs'\"   # from the Corolla checkout")
    print(f"stop: python -m simulations.deploy down --dir {root}")
    return 0


def _down(args: argparse.Namespace) -> int:
    pidfile = Path(args.dir).resolve() / PIDFILE
    if not pidfile.is_file():
        print(f"nothing to stop: no {pidfile}", file=sys.stderr)
        return 1
    pids = json.loads(pidfile.read_text())
    for name, pid in pids.items():
        try:
            os.killpg(pid, signal.SIGTERM)  # `up` started each component as a session leader
            print(f"stopped {name} ({pid})")
        except ProcessLookupError:
            print(f"{name} ({pid}) was not running")
    pidfile.unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="make certificates and keys, start and register everything, wait until online")
    up.add_argument("--dir", required=True, help="working folder: certs/, keys/, logs/, cli-home/")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=9092, help="SuperLink port (default 9092; 0 = any free port)")
    up.add_argument("--warm-workers", action="store_true", help="start a warm node worker beside each SuperNode "
                    "(python -m client.node_worker; docs/scaling.md §3)")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop the processes `up` started")
    down.add_argument("--dir", required=True)
    down.set_defaults(func=_down)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
