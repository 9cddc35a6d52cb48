"""``corolla run --ray-address`` (issue 20): address checks (default suite) and a real two-node Ray
cluster on loopback (slow): ClientApp actors on both nodes, results equal to a local run.

The cluster is torn down by killing exactly the processes it started (everything naming its temp
dir or its GCS port), not with ``ray stop``, which would stop every Ray instance of this user on
the machine (other test sessions' included).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from simulations.cli import main
from simulations.ray_cluster import RayAddressError, check_ray_address, parse_ray_address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_addresses_parse_and_malformed_ones_say_what_is_expected() -> None:
    assert parse_ray_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_ray_address(" head.example:10001 ") == ("head.example", 10001)
    for bad in ("127.0.0.1", "host:", ":6379", "host:99999", "host:port"):
        with pytest.raises(RayAddressError, match="HOST:PORT"):
            parse_ray_address(bad)
    with pytest.raises(RayAddressError, match="ray://"):
        parse_ray_address("ray://127.0.0.1:10001")


def test_an_unreachable_address_fails_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()  # nothing listens there once the probe socket is closed
    with pytest.raises(RayAddressError, match=f"ray start --head --port {port}"):
        check_ray_address(f"127.0.0.1:{port}", timeout=1.0)
    assert main(["run", "--clients", "2", "--ray-address", f"127.0.0.1:{port}", "-c", "num-server-rounds=1"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "no Ray cluster answers" in err


def test_a_listening_port_passes_the_check() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_ray_address(f"127.0.0.1:{server.getsockname()[1]}", timeout=1.0)


# --- a real two-node cluster (slow) ----------------------------------------------------------------

def _ray(*args: str, env: dict[str, str]) -> None:
    ray_bin = str(Path(sys.executable).parent / "ray")
    out = subprocess.run([ray_bin, *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def _kill_cluster(temp_dir: str, port: int) -> None:
    marks = (temp_dir, f":{port}")
    spare = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # this test process and its callers
    victims = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(mark in cmd for mark in marks) and proc.pid not in spare:
            victims.append(proc)
    for proc in victims:
        try:
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(victims, timeout=30)


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    temp_dir = str(tmp_path_factory.mktemp("ray"))
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
             "--temp-dir", temp_dir, "--include-dashboard", "false", env=env)
        _ray("start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", env=env)
        yield f"127.0.0.1:{port}"
    finally:
        _kill_cluster(temp_dir, port)


def _kill_by_home(home: str) -> None:
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FLWR_HOME") == home:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _actor_nodes(address: str) -> tuple[int, set[str]]:
    """Alive nodes of the cluster and the nodes ClientAppActor actors ran on (Ray's GCS state)."""
    probe = (  # the GCS's actor table (the state API would need the dashboard, which the cluster runs without)
        "import json, ray\n"
        f"ray.init(address={address!r}, logging_level='error')\n"
        "from ray._private.state import actors\n"
        "nodes = [n for n in ray.nodes() if n['Alive']]\n"
        "ran = {a['Address']['NodeID'] for a in actors().values() if 'ClientAppActor' in a['ActorClassName']}\n"
        "print(json.dumps({'nodes': len(nodes), 'actor_nodes': sorted(ran)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    state = json.loads(out.stdout.strip().splitlines()[-1])
    return int(state["nodes"]), set(state["actor_nodes"])


RUN = ('strategy.name="fedit" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 '
       'adapter.rank=4 eval.max-examples=32 train.lr=0.01')


def _summary(folder: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines() if line.strip()]
    keep = ("round", "clients", "train_loss", "eval_loss", "bytes_up", "bytes_down")
    return [{k: row.get(k) for k in keep} for row in rows]


@pytest.mark.slow  # a real two-node Ray cluster on loopback: minutes (passed here in 379 s at load 6-9)
def test_clientapps_run_on_both_nodes_and_match_a_local_run(two_node_cluster: str, tmp_path: Path) -> None:
    from simulations.cli import load_extensions
    from simulations.launch import find_app_dir, launch, resolve_config

    load_extensions()  # the task plugins' sections, as `corolla run` registers them before validating
    app = find_app_dir()
    results = {}
    for name, address in (("cluster", two_node_cluster), ("local", None)):
        _, flat = resolve_config(app, [RUN, f'output-dir="{tmp_path}" run-name="{name}"'])
        env = {**os.environ, "FLWR_HOME": str(tmp_path / f"home-{name}"),
               "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
               "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port())}
        try:
            result = launch(app, flat, num_supernodes=2, env=env, echo=False, ray_address=address)
        finally:  # the local run's `flwr run` leaves its managed SuperLink behind
            _kill_by_home(env["FLWR_HOME"])
        assert result.ok, result.output[-3000:]
        results[name] = _summary(tmp_path / name)
        if address is not None:
            nodes, actor_nodes = _actor_nodes(address)
            assert nodes == 2
            assert len(actor_nodes) == 2, f"ClientApp actors ran on {actor_nodes} only"
    assert results["cluster"] == results["local"]
    assert [r["round"] for r in results["cluster"]] == [0, 1, 2]
