"""One environment for every Flower process: the launcher and the deployment topology share it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.deploy import Topology
from simulations.flower_env import ForeignSuperLink, check_managed_superlink, flower_binary, flower_env


def test_every_process_finds_this_environment_and_installs_nothing() -> None:
    bindir = str(Path(sys.executable).parent)
    for managed in (True, False):
        env = flower_env({"HOME": "/home/u", "PATH": "/usr/bin", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "0"},
                         managed=managed)
        assert env["PATH"].split(os.pathsep) == [bindir, "/usr/bin"]
        assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"  # forced, even against the caller
        assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert flower_env({"PATH": bindir})["PATH"] == bindir  # not added twice


def test_only_the_managed_superlink_gets_corolla_s_home_and_ports() -> None:
    managed = flower_env({"HOME": "/home/u", "COROLLA_FLWR_HOME": "/srv/c"})
    assert managed["FLWR_HOME"] == "/srv/c" and managed["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] != "39091"
    plain = flower_env({"HOME": "/home/u"}, managed=False)
    assert "FLWR_HOME" not in plain and "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT" not in plain


def test_thread_caps_apply_only_when_asked_and_never_override_the_caller() -> None:
    assert "OMP_NUM_THREADS" not in flower_env({})
    capped = flower_env({"MKL_NUM_THREADS": "4"}, threads=1)
    assert capped["OMP_NUM_THREADS"] == capped["OPENBLAS_NUM_THREADS"] == "1" and capped["MKL_NUM_THREADS"] == "4"


def test_the_deployment_topology_starts_its_processes_with_the_same_environment(tmp_path: Path) -> None:
    assert Topology(tmp_path).env == flower_env(managed=False)


def test_executables_come_from_this_environment_or_a_clear_error() -> None:
    assert flower_binary("flwr") == str(Path(sys.executable).parent / "flwr")
    with pytest.raises(FileNotFoundError, match="`no-such-flower-tool` not found: install flwr"):
        flower_binary("no-such-flower-tool")


def _listener(cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A process working in ``cwd`` that listens on a free loopback port (a stand-in SuperLink)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time\ns=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
         "print(s.getsockname()[1], flush=True); time.sleep(120)"],
        cwd=cwd, stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_a_managed_superlink_of_another_directory_is_refused_naming_it(tmp_path: Path) -> None:
    other, mine = tmp_path / "other-checkout", tmp_path / "this-checkout"
    other.mkdir(), mine.mkdir()
    proc, port = _listener(other)
    try:
        env = {"FLWR_LOCAL_CONTROL_API_PORT": str(port)}
        with pytest.raises(ForeignSuperLink, match=rf"started from {other} \(pid {proc.pid}\) answers on port {port}"):
            check_managed_superlink(mine, env)
        check_managed_superlink(other, env)  # its own directory: reused as before
    finally:
        proc.kill()
        proc.wait()
    check_managed_superlink(mine, env)  # nothing listens: flwr run starts one here
