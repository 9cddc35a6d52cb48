"""Launching a simulation through the real Flower path: ``flwr run`` on Flower's Ray engine.

``corolla run`` is a thin, checked wrapper around ``flwr run <app> --stream``:

* the run config (``[tool.flwr.app.config]`` plus overrides) is validated *before* anything
  starts, and every problem is reported together;
* ``output-dir`` and ``resume-from`` are made absolute (the ServerApp runs in the SuperLink's
  working directory);
* the managed SuperLink is Corolla's own (``$COROLLA_FLWR_HOME``, default ``~/.corolla/flwr``, on
  its own ports), started with runtime dependency installation off, so runs work offline and never
  reinstall torch (``simulations.flower_env``);
* ``flwr run --stream`` exits 0 even when the run failed, so the final status is read with
  ``flwr ls --run-id`` and a run that did not finish as ``completed`` exits non-zero.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.common.config import flatten_dict, parse_config_args

from contract import ConfigError, RunConfig, parse_run_config
from simulations.flower_env import check_managed_superlink, flower_binary, flower_env

@dataclass(frozen=True)
class LaunchResult:
    """The outcome of one ``flwr run``: run id, final status, and whether it completed."""

    run_id: int | None
    status: str
    output: str

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


def find_app_dir(start: Path | None = None) -> Path:
    """The Corolla app directory: ``start`` (default: cwd) or the installed source tree."""
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent.parent]
    for candidate in candidates:
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "[tool.flwr.app]" in pyproject.read_text():
            return candidate.resolve()
    raise FileNotFoundError(
        "no Flower app found: run from the Corolla checkout (the folder with pyproject.toml) or pass --app DIR"
    )


def app_defaults(app_dir: Path) -> dict[str, Any]:
    """The flat ``[tool.flwr.app.config]`` of the app's pyproject.toml."""
    with (app_dir / "pyproject.toml").open("rb") as handle:
        data = tomllib.load(handle)
    return flatten_dict(data["tool"]["flwr"]["app"]["config"])


def resolve_config(app_dir: Path, overrides: list[str]) -> tuple[RunConfig, dict[str, Any]]:
    """Validate defaults + overrides; returns the config and the overrides to pass on (``output-dir``
    and a set ``resume-from`` made absolute against the current directory: the ServerApp runs in
    another working directory)."""
    from simulations.cli import load_extensions

    load_extensions()  # the sections of the task plugins and strategies, before validating against them
    flat_overrides = parse_config_args(overrides) if overrides else {}
    merged = {**app_defaults(app_dir), **flat_overrides}
    config = parse_run_config(merged)
    from server.adapter_setup import adapter_kind_problems  # the strategy side (adapter kind, mixed ranks)

    problems = adapter_kind_problems(config)
    if problems:
        raise ConfigError("invalid Corolla run config:\n  - " + "\n  - ".join(problems))
    flat_overrides["output-dir"] = str(Path(config.output_dir).expanduser().resolve())
    if config.resume_from:
        flat_overrides["resume-from"] = str(Path(config.resume_from).expanduser().resolve())
    return config, flat_overrides


def toml_overrides(values: Mapping[str, Any]) -> str:
    """``key=value`` pairs in the TOML syntax ``--run-config`` expects."""
    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value)
        return repr(value)

    return " ".join(f"{key}={literal(value)}" for key, value in values.items())


def run_status(run_id: int, *, env: Mapping[str, str], connection: str | None = None) -> str:
    """The run's status from ``flwr ls --run-id`` (e.g. ``finished:completed``)."""
    cmd = [flower_binary("flwr"), "ls", *( [connection] if connection else [] ), "--run-id", str(run_id), "--format", "json"]
    out = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=120)
    try:
        payload = json.loads(out.stdout[out.stdout.index("{"):])
    except ValueError:
        return f"unknown (flwr ls said: {out.stdout.strip() or out.stderr.strip()})"
    runs = payload.get("runs", [])
    return str(runs[0].get("status", "unknown")) if runs else "unknown (run not listed)"


def federation_config(num_supernodes: int, cpus_per_client: int, gpus_per_client: float) -> str:
    """The ``--federation-config`` of a local simulation: nodes and each ClientApp's Ray resources."""
    if cpus_per_client < 1 or gpus_per_client < 0:
        raise ValueError(f"--cpus-per-client must be >= 1 and --gpus-per-client >= 0, got {cpus_per_client} and {gpus_per_client}")
    config = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client}"
    return config + (f" client-resources-num-gpus={gpus_per_client:g}" if gpus_per_client else "")


def launch(
    app_dir: Path,
    overrides: Mapping[str, Any],
    *,
    num_supernodes: int,
    cpus_per_client: int = 1,
    gpus_per_client: float = 0.0,
    connection: str | None = None,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
    on_line: Callable[[str], None] | None = None,
    ray_address: str | None = None,
) -> LaunchResult:
    """``flwr run`` the app with ``overrides``; stream its output; return the checked outcome.

    ``echo`` copies Flower's output to stdout; ``on_line`` sees every line (progress displays).
    ``ray_address``: the simulation joins that Ray cluster (``simulations.ray_cluster``) through a
    SuperLink started for this run; checked before anything starts (``RayAddressError``).
    ``cpus_per_client``/``gpus_per_client`` become Flower's ``client-resources-num-cpus``/``-num-gpus``:
    Ray runs as many ClientApps at once as the resources allow (0.25 GPUs: four per GPU), and hides the
    GPUs from a ClientApp that reserves none (``docs/precision.md §6``).
    """
    if ray_address is not None:
        if connection is not None:
            raise ValueError("--ray-address applies to simulations; a --connection names a deployment, pass one of them")
        from simulations.ray_cluster import superlink_on_cluster

        with superlink_on_cluster(ray_address, env, cwd=app_dir) as cluster_env:
            return launch(app_dir, overrides, num_supernodes=num_supernodes, cpus_per_client=cpus_per_client,
                          gpus_per_client=gpus_per_client, env=cluster_env, echo=echo, on_line=on_line)
    env = flower_env(env, managed=connection is None)
    if connection is None:
        check_managed_superlink(app_dir, env)  # ForeignSuperLink: another checkout's SuperLink would run this
    cmd = [flower_binary("flwr"), "run", str(app_dir)]
    if connection:
        cmd.append(connection)
    cmd += ["--stream", "--run-config", toml_overrides(overrides)]
    if connection is None:
        cmd += ["--federation-config", federation_config(num_supernodes, cpus_per_client, gpus_per_client)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=app_dir)
    lines = []
    run_id = None
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
        if on_line is not None:
            on_line(line)
        match = re.search(r"Successfully started run (\d+)", line)
        if match:
            run_id = int(match.group(1))
    proc.wait()
    output = "".join(lines)
    if run_id is None:
        return LaunchResult(None, f"not started (flwr run exited {proc.returncode})", output)
    return LaunchResult(run_id, run_status(run_id, env=env, connection=connection), output)
