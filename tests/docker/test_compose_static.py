"""Static checks of the Docker deployment (no Docker engine needed).

The compose files are checked against the subset of the Compose specification they use (keys and
types), every file they reference must exist (the secrets after ``make-certs.sh`` ran), every image
tag is pinned to the flwr version of ``pyproject.toml``, every service runs with TLS, SuperNode
authentication and the SuperExec secret, and the flags match the process topology the deployment
test runs (``simulations/deploy.py``). No key or certificate is in the repository or the build
context.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flwr.common.config import parse_config_args

from simulations.deploy import Topology, make_certs, superexec_env

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
COMPOSE_GPU = DOCKER / "compose.gpu.yml"
DOCKERFILE = DOCKER / "Dockerfile"
MAKE_CERTS = DOCKER / "make-certs.sh"

TOP_LEVEL = {"name", "services", "secrets", "volumes", "networks", "configs"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "ports", "volumes", "secrets", "depends_on", "restart",
    "environment", "deploy", "networks", "healthcheck", "user", "profiles",
}
BUILD_KEYS = {"context", "dockerfile", "args"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def flwr_version() -> str:
    """``flwr[simulation]>=1.42.0,<1.43`` in pyproject.toml -> ``1.42.0``."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (flwr,) = [d for d in deps if re.match(r"flwr(\[|[<>=~ ]|$)", d)]
    match = re.search(r">=\s*(\d+\.\d+\.\d+)", flwr)
    assert match, f"no pinned lower bound in {flwr!r}"
    return match.group(1)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def services(path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    return load(path)["services"]


def flags(service: dict[str, Any]) -> dict[str, str | None]:
    """``--flag=value`` / ``--flag`` items of a service's command, as a dict (a service without one: none)."""
    out: dict[str, str | None] = {}
    command = service.get("command", [])
    assert isinstance(command, list) and all(isinstance(c, str) for c in command)
    for item in command:
        assert item.startswith("--"), f"write flags as --flag=value, one item each: {item!r}"
        name, sep, value = item.partition("=")
        out[name] = value if sep else None
    return out


def by_role(role: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if re.fullmatch(role, name)}


# -- schema ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_schema_subset(path: Path) -> None:
    data = load(path)
    assert set(k for k in data if not k.startswith("x-")) <= TOP_LEVEL
    assert data["name"] == "corolla"
    for name, svc in data["services"].items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name)
        assert set(svc) <= SERVICE_KEYS, f"{name}: unknown keys {set(svc) - SERVICE_KEYS}"
        assert isinstance(svc.get("image"), str), f"{name}: every service names its image"
        if "build" in svc:
            assert set(svc["build"]) <= BUILD_KEYS
            assert all(isinstance(v, str) for v in svc["build"].get("args", {}).values())
        for key in ("ports", "volumes", "secrets", "depends_on"):
            if key in svc:
                assert isinstance(svc[key], list) and all(isinstance(v, str) for v in svc[key]), (name, key)
        if "restart" in svc:
            assert svc["restart"] in RESTART
        for port in svc.get("ports", []):
            assert re.fullmatch(r"(127\.0\.0\.1|\$\{\w+:-[\d.]+\}):(\$\{\w+:-\d+\}|\d+):\d+", port), port
        for dep in svc.get("depends_on", []):
            assert dep in services(), f"{name} depends on unknown service {dep}"
    for name, secret in data.get("secrets", {}).items():
        assert set(secret) == {"file"} and isinstance(secret["file"], str), name


def test_every_secret_a_service_uses_is_declared_and_every_flag_path_is_mounted() -> None:
    declared = set(load(COMPOSE)["secrets"])
    for name, svc in services().items():
        mounted = set(svc.get("secrets", []))
        assert mounted <= declared, f"{name}: undeclared secrets {mounted - declared}"
        if "command" not in svc:
            continue
        for flag, value in flags(svc).items():
            if value and value.startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in mounted, f"{name} {flag}: {value} is not mounted"


# -- referenced files ----------------------------------------------------------------------------
def test_build_contexts_and_dockerfiles_exist() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        for name, svc in load(path)["services"].items():
            if "build" not in svc:
                continue
            context = (path.parent / svc["build"]["context"]).resolve()
            assert context == ROOT, f"{name}: build from the repository root"
            assert (context / svc["build"]["dockerfile"]).is_file()
    dockerignore = DOCKER / "Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file
    assert dockerignore.is_file()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY"):
            for source in shlex.split(line)[1:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
                    assert _admitted_by_dockerignore(source, dockerignore), f"{source} is not in the build context"


def test_secret_files_are_exactly_what_make_certs_writes(tmp_path: Path) -> None:
    nodes = len(by_role(r"supernode-\d+"))
    make_certs(tmp_path, nodes)
    for name, secret in load(COMPOSE)["secrets"].items():
        relative = Path(secret["file"])
        assert relative.parts[0] in ("certs", "keys"), f"{name}: secrets live in docker/certs or docker/keys"
        assert (tmp_path / relative).is_file(), f"{name}: make-certs.sh -n {nodes} does not write {relative}"


def test_bind_mounts_are_ignored_by_git() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and volume.endswith(":ro") and (DOCKER / source).is_file():
                continue  # a read-only config file from the repository (the Fleet gateway's nginx.conf)
            if source.startswith("."):
                path = (DOCKER / source).resolve().relative_to(ROOT)
                check = subprocess.run(["git", "check-ignore", "-q", f"{path}/x"], cwd=ROOT)
                assert check.returncode == 0, f"{name}: bind mount {path} is not git-ignored"


def test_make_certs_script_is_valid_bash_and_executable() -> None:
    assert os.access(MAKE_CERTS, os.X_OK)
    assert subprocess.run(["bash", "-n", str(MAKE_CERTS)]).returncode == 0


# -- pinned versions -----------------------------------------------------------------------------
def test_image_tags_are_pinned_to_the_flwr_version() -> None:
    version = flwr_version()
    assert version == "1.42.0"
    for path in (COMPOSE, COMPOSE_GPU):
        for name, svc in load(path)["services"].items():
            image, _, tag = svc["image"].partition(":")
            assert "$" not in svc["image"] and tag, f"{name}: pin a literal tag"
            if image.startswith("flwr/"):
                assert tag == version, f"{name}: {svc['image']}"
            elif name == "fleet-gateway":
                assert image == "nginx" and re.fullmatch(r"\d+\.\d+(\.\d+)?-alpine", tag), svc["image"]
            else:
                assert image == "corolla-superexec" and tag in (f"{version}-cpu", f"{version}-cuda"), svc["image"]
    froms = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]
    assert froms == [f"flwr/superexec:{version}"]


def test_gpu_variant_builds_cuda_and_reserves_gpus() -> None:
    for name, svc in services(COMPOSE_GPU).items():
        assert name in services(), f"{name} is not a service of compose.yml"
        assert svc["build"]["args"]["DEVICE"] == "cuda"
        assert svc["image"].endswith("-cuda")
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert set(services(COMPOSE_GPU)) == set(by_role(r"superexec-.*|node-worker-\d+"))
    assert set(services(COMPOSE)["superexec-serverapp"]["build"]["args"]) >= {"DEVICE"}
    assert re.search(r"^ARG DEVICE=cpu$", DOCKERFILE.read_text(), re.M)


# -- security flags -----------------------------------------------------------------------------
def test_no_service_runs_insecure() -> None:
    for name, svc in services().items():
        assert "--insecure" not in flags(svc), name


def test_superlink_has_tls_node_auth_process_isolation_and_no_runtime_installs() -> None:
    (superlink,) = by_role("superlink").values()
    f = flags(superlink)
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--superexec-auth-secret-file"):
        assert f.get(flag), flag
    assert "--enable-supernode-auth" in f and "--disable-runtime-dependency-installation" in f
    assert f["--isolation"] == "process" and f["--host"] == "0.0.0.0"


def test_every_supernode_authenticates_uses_tls_and_gets_its_own_partition() -> None:
    nodes = by_role(r"supernode-\d+")
    assert len(nodes) >= 2
    partitions = []
    for name, svc in nodes.items():
        f = flags(svc)
        i = int(name.rsplit("-", 1)[1])
        assert f["--superlink"] == "superlink:9092"
        assert f["--root-certificates"] == "/run/secrets/ca.crt"
        assert f["--auth-supernode-private-key"] == f"/run/secrets/supernode-{i}.auth"
        assert f["--ssl-certfile"] == f"/run/secrets/supernode-{i}.crt"  # its Runtime API over TLS
        assert f.get("--ssl-keyfile") and f.get("--ssl-ca-certfile") and f.get("--superexec-auth-secret-file")
        assert f["--isolation"] == "process"
        config = dict(pair.split("=", 1) for pair in (f["--node-config"] or "").split())
        assert int(config["num-partitions"]) == len(nodes)
        assert int(config["partition-id"]) == i - 1
        partitions.append(int(config["partition-id"]))
    assert sorted(partitions) == list(range(len(nodes)))


def test_every_runtime_api_has_one_superexec_with_tls_and_the_secret() -> None:
    executors = by_role(r"superexec-.*")
    targets = {flags(svc)["--runtime-api-address"]: name for name, svc in executors.items()}
    expected = {"superlink:9092"} | {f"{n}:9094" for n in by_role(r"supernode-\d+")}
    assert set(targets) == expected and len(targets) == len(executors)
    for name, svc in executors.items():
        f = flags(svc)
        assert f["--root-certificates"] == "/run/secrets/ca.crt"
        api = "superlink" if name == "superexec-serverapp" else name.rsplit("-", 1)[1]
        assert f["--superexec-auth-secret-file"] == f"/run/secrets/superexec-secret-{api}"  # its Runtime API's own
        assert "build" in svc, f"{name} runs Corolla's image"


def test_every_node_has_a_warm_worker_on_a_volume_only_its_clientapps_share() -> None:
    nodes = by_role(r"supernode-\d+")
    workers = by_role(r"node-worker-\d+")
    assert len(workers) == len(nodes)
    for name, node in nodes.items():
        i = name.rsplit("-", 1)[1]
        config = dict(pair.split("=", 1) for pair in (flags(node)["--node-config"] or "").split())
        assert parse_config_args([flags(node)["--node-config"] or ""])  # what flower-supernode does with it
        config = {key: value.strip('"') for key, value in config.items()}
        worker, clientapps = services()[f"node-worker-{i}"], services()[f"superexec-clientapp-{i}"]
        assert worker["entrypoint"] == ["python", "-m", "client.node_worker"] and "build" in worker
        assert flags(worker)["--socket"] == config["worker-socket"]
        volume = f"node-{i}-worker:{Path(config['worker-socket']).parent}"
        assert volume in worker["volumes"] and volume in clientapps["volumes"]
        state = [v for v in clientapps["volumes"] if v != volume]  # the node's state folder: the worker runs the handlers
        assert set(state) <= set(worker["volumes"])
        others = [svc for n, svc in services().items() if n not in (f"node-worker-{i}", f"superexec-clientapp-{i}")]
        assert not any(v.startswith(f"node-{i}-worker:") for svc in others for v in svc.get("volumes", []))
        assert f"node-worker-{i}" in clientapps["depends_on"]
    assert set(load(COMPOSE)["volumes"]) >= {f"node-{n.rsplit('-', 1)[1]}-worker" for n in nodes}


def test_the_image_holds_every_package_corolla_installs() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {shlex.split(line)[-1].removeprefix("./") for line in DOCKERFILE.read_text().splitlines()
              if line.startswith("COPY") and not line.rstrip().endswith("./")}
    assert set(packages) <= copied, f"the Dockerfile does not copy {set(packages) - copied}"


def test_compose_flags_match_the_tested_process_topology(tmp_path: Path) -> None:
    """The deployment test runs these exact flags as processes; only addresses and files differ."""
    topo = Topology(tmp_path, nodes=2)
    local = {
        "superlink": topo.superlink_command(),
        "superexec-serverapp": topo.superexec_command("127.0.0.1:1"),
        "supernode-1": topo.supernode_command(1, port=1),
        "superexec-clientapp-1": topo.superexec_command("127.0.0.1:2"),
        "node-worker-1": topo.node_worker_command(1)[2:],  # python -m client.node_worker: the compose entrypoint
    }
    for name, cmd in local.items():
        local_flags = {c for c in cmd[1:] if c.startswith("--")} - {"--status-file"}  # the test's bookkeeping
        compose_flags = set(flags(services()[name])) - {"--database"}  # compose persists SuperLink state
        assert compose_flags == local_flags, name



def test_superexecs_poll_for_tasks_every_tenth_of_a_second_in_both_topologies() -> None:
    """Flower's SuperExec waits 1 s between looks for a new ClientApp task by default; both topologies
    set 0.1 s (docs/scaling.md §3), and a value the operator sets wins."""
    assert re.search(r"^\s*FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0\.1 \\$", DOCKERFILE.read_text(), re.M)
    assert superexec_env({"PATH": "/bin"}) == {"PATH": "/bin", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}
    assert superexec_env({"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "2"})["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "2"

# -- exposure and secrets per component (docker/README.md §7) ----------------------------------------
def test_the_superlink_port_is_published_on_loopback_only() -> None:
    (superlink,) = by_role("superlink").values()
    assert superlink["ports"] == ["127.0.0.1:${COROLLA_SUPERLINK_PORT:-9092}:9092"]
    for name, svc in services().items():
        for port in svc.get("ports", []):
            if not port.startswith("127.0.0.1:"):  # reachable from other machines: the Fleet gateway only
                assert name == "fleet-gateway" and svc["profiles"] == ["remote-nodes"], (name, port)
                assert port.endswith(":9095")


def test_the_fleet_gateway_forwards_the_fleet_api_and_refuses_the_rest() -> None:
    conf = (DOCKER / "fleet-gateway.conf").read_text()
    gateway = services()["fleet-gateway"]
    assert "./fleet-gateway.conf:/etc/nginx/nginx.conf:ro" in gateway["volumes"]
    locations = dict(re.findall(r"location (\S+) \{(.*?)\}", conf, re.S))
    assert set(locations) == {"/v1/fleet/", "/"}
    assert "proxy_pass https://superlink:9092;" in locations["/v1/fleet/"] and "proxy_ssl_verify on;" in locations["/v1/fleet/"]
    assert locations["/"].strip() == "return 403;"
    assert "listen 9095 ssl;" in conf and "/run/secrets/superlink.crt" in conf
    assert set(gateway["secrets"]) == {"ca.crt", "superlink.crt", "superlink.key"}  # no SuperExec secret, no node key


def test_a_supernode_calls_only_fleet_api_paths() -> None:
    """What the gateway relies on: Flower's SuperNode client uses /v1/fleet/* and nothing else."""
    import flwr.supernode.fleet_http_client as client

    paths = re.findall(r'path="(/[^"]*)"', Path(client.__file__).read_text())
    assert len(paths) >= 10 and all(p.startswith("/v1/fleet/") for p in paths), paths


def test_each_runtime_api_secret_is_held_by_that_api_and_its_own_superexec_only() -> None:
    holders: dict[str, set[str]] = {}
    for name, svc in services().items():
        for secret in svc.get("secrets", []):
            if secret.startswith("superexec-secret"):
                holders.setdefault(secret, set()).add(name)
    nodes = sorted(int(n.rsplit("-", 1)[1]) for n in by_role(r"supernode-\d+"))
    assert holders == {
        "superexec-secret-superlink": {"superlink", "superexec-serverapp"},
        **{f"superexec-secret-{i}": {f"supernode-{i}", f"superexec-clientapp-{i}"} for i in nodes},
    }
    # what a client machine runs (supernode-i, superexec-clientapp-i) mounts nothing of the server's or another node's
    for i in nodes:
        mounted = set(services()[f"supernode-{i}"]["secrets"]) | set(services()[f"superexec-clientapp-{i}"]["secrets"])
        assert mounted == {"ca.crt", f"supernode-{i}.crt", f"supernode-{i}.key", f"supernode-{i}.auth", f"superexec-secret-{i}"}


def test_make_certs_writes_a_different_secret_per_runtime_api(tmp_path: Path) -> None:
    make_certs(tmp_path, 2)
    secrets = {name: (tmp_path / "keys" / f"superexec-secret-{name}").read_text() for name in ("superlink", "1", "2")}
    assert len(set(secrets.values())) == 3 and all(re.fullmatch(r"[0-9a-f]{64}", v) for v in secrets.values())
    assert not (tmp_path / "keys" / "superexec-secret").exists()  # no one secret shared by every machine


# -- no secrets in the repository ----------------------------------------------------------------
def test_no_keys_or_certificates_in_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.split()
    for rel in listed:
        path = ROOT / rel
        assert not re.search(r"\.(key|pem|crt|p12|pfx)$", rel), f"{rel}: key or certificate file in the repository"
        assert not (rel.startswith("docker/") and re.search(r"(^|/)(certs|keys|state)/", rel)), rel
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert not PRIVATE_KEY.search(path.read_text(errors="ignore")), f"{rel}: contains a private key"
    for generated in ("docker/certs/ca.key", "docker/keys/supernode-1", "docker/keys/superexec-secret-1", "docker/state/x"):
        assert subprocess.run(["git", "check-ignore", "-q", generated], cwd=ROOT).returncode == 0, generated


def test_dockerfile_bakes_no_secret() -> None:
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if re.match(r"(COPY|ADD)\b", line):
            assert not re.search(r"certs|keys|secret|state|\.key|\.pem", line), line
        if re.match(r"(ARG|ENV)\b", line):
            assert not re.search(r"(?i)password|token|secret|private", line), line
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[i for i, l in enumerate(ignore) if l and not l.startswith("#")][0]] == "*"  # allow-list
    assert not any(re.search(r"certs|keys|state", l) for l in ignore if l.startswith("!"))


def test_docker_compose_config_validates_when_the_plugin_is_available(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose plugin not installed (the static checks above still ran)")
    copy = tmp_path / "docker"
    copy.mkdir()
    for path in (COMPOSE, COMPOSE_GPU):
        shutil.copy(path, copy / path.name)
    make_certs(copy, len(by_role(r"supernode-\d+")))
    for files in (["compose.yml"], ["compose.yml", "compose.gpu.yml"]):
        args = [a for f in files for a in ("-f", str(copy / f))]
        out = subprocess.run([docker, "compose", *args, "config", "-q"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def _admitted_by_dockerignore(source: str, dockerignore: Path) -> bool:
    """Whether the allow-list admits ``source`` (enough for our `*` + `!path` file)."""
    source = source.rstrip("/")
    admitted = False
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "*":
            admitted = False
        elif line.startswith("!") and line[1:].rstrip("/") == source:
            admitted = True
    return admitted


def test_node_configs_parse_as_flower_parses_them_and_keep_node_state_on_a_volume(tmp_path: Path) -> None:
    """Flower reads --node-config as TOML: an unquoted path fails only when the SuperNode starts."""
    from flwr.common.config import parse_config_args  # noqa: PLC0415

    for name, svc in by_role(r"supernode-\d+").items():
        config = parse_config_args([flags(svc)["--node-config"] or ""])
        assert config["state-dir"] == "/app/node-state", name
        executor = services()[f"superexec-clientapp-{name.rsplit('-', 1)[1]}"]
        assert any(v.endswith(":/app/node-state") for v in executor.get("volumes", [])), name
    topo = Topology(tmp_path, nodes=2)
    cmd = topo.supernode_command(1, port=1)
    assert parse_config_args([cmd[cmd.index("--node-config") + 1]])["state-dir"] == str(tmp_path / "node-state" / "1")
