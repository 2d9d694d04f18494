"""Run a whole federation on this host as containers: one `pollen server`, N `pollen client`s with
CPU/memory caps, on a private bridge network; wait for the server to finish; collect logs and
resource figures; always tear everything down.

Each container sees only the secrets it needs: the server gets the CA and its key pair, client I
gets the CA and node-I.key. Files are staged owned by the images' non-root uid (10001).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from pollen.deploy.certs import (
    CA_CERT,
    MANIFEST,
    SERVER_CERT,
    SERVER_KEY,
    generate_certs,
    load_bundle,
)
from pollen.errors import DeploymentError

IMAGE_UID = 10001  # USER in docker/*.Dockerfile
SERVER_ALIAS = "pollen-server"
NO_ENGINE = "no Docker engine is reachable ({err}); start dockerd or run docker/bootstrap.sh"


@dataclass
class DeployResult:
    """What a local deployment left: exit codes, logs, per-container resource use, server output."""

    exit_code: int
    duration_s: float
    server_log: str
    client_logs: dict[str, str]
    client_exit_codes: dict[str, int | None]
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _docker_client() -> Any:
    try:
        from docker.errors import DockerException  # type: ignore[import-untyped]

        import docker  # type: ignore[import-untyped]
    except ImportError as err:
        raise DeploymentError("the docker SDK is missing: pip install 'pollen-fl[docker]'") from err
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException as err:
        raise DeploymentError(NO_ENGINE.format(err=str(err).splitlines()[0][:200])) from err
    return client


def engine_available() -> bool:
    """True when a Docker engine answers (used by tests and the CLI to decide, not to fail)."""
    try:
        _docker_client().close()
    except DeploymentError:
        return False
    return True


def _mem_bytes(memory: str) -> int:
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = memory.strip().lower().removesuffix("b") or "0"
    unit = units.get(text[-1], 1)
    try:
        value = float(text[:-1] if text[-1] in units else text) * unit
    except ValueError:
        value = 0
    if value < 64 << 20:
        raise DeploymentError(f"memory {memory!r} must be like '512m' or '2g' and at least 64m")
    return int(value)


def _stage_config(config_path: Path, dest: Path, n_clients: int, rounds: int | None) -> None:
    """Copy the run config with the deployment's client count (and rounds) written in."""
    if not Path(config_path).is_file():
        raise DeploymentError(f"config file {config_path} does not exist")
    try:
        data = tomllib.loads(Path(config_path).read_text())
    except tomllib.TOMLDecodeError as err:
        raise DeploymentError(f"config file {config_path} is not valid TOML: {err}") from err
    data.setdefault("federation", {})["clients"] = n_clients
    if rounds is not None:
        if rounds < 1:
            raise DeploymentError(f"rounds must be >= 1, got {rounds}")
        data.setdefault("run", {})["rounds"] = rounds
    dest.mkdir(parents=True)
    (dest / "run.toml").write_text(tomli_w.dumps(data))


def _give(path: Path, private: bool) -> None:
    """Hand a staged file/dir to the image user (root can chown; otherwise containers run as us)."""
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    os.chmod(path, (0o600 if private else 0o644) if path.is_file() else 0o700)


def _stage_certs(bundle_dir: Path, dest: Path, files: list[str]) -> Path:
    dest.mkdir(parents=True)
    for name in files:
        shutil.copyfile(bundle_dir / name, dest / name)
        _give(dest / name, private=name.endswith(".key"))
    _give(dest, private=True)
    return dest


def _container_stats(container: Any) -> dict[str, float]:
    """Peak memory and CPU seconds so far (cgroup v1 and v2 field names); {} once exited."""
    try:
        container.reload()
        if container.status != "running":
            return {}
        s = container.stats(stream=False)
    except Exception:  # noqa: BLE001 - a container that already exited has no stats
        return {}
    mem = s.get("memory_stats", {})
    if not mem:  # exited between reload() and stats()
        return {}
    cpu = s.get("cpu_stats", {}).get("cpu_usage", {})
    peak = mem.get("max_usage") or mem.get("stats", {}).get("peak") or mem.get("usage", 0)
    return {"mem_peak_mb": round(peak / 2**20, 1), "cpu_s": round(cpu.get("total_usage", 0) / 1e9, 2)}


def deploy_local(n_clients: int, *, cpus: float = 0.5, memory: str = "1g",
                 server_cpus: float | None = None, server_memory: str | None = None,
                 image_tag: str = "0.1.0", server_image: str = "pollen-server",
                 client_image: str = "pollen-client", config_path: Path,
                 certs_dir: Path | None = None, rounds: int | None = None,
                 network_name: str = "pollen-net", out_dir: Path | None = None,
                 timeout: float = 3600.0, port: int = 9092) -> DeployResult:
    """Run 1 server + `n_clients` clients (each capped at `cpus` CPUs / `memory`) to completion.

    `certs_dir=None` makes a throw-away bundle for this run. Logs go to `out_dir/logs`, the
    server's /data to `out_dir/server`. Raises DeploymentError on timeout or a missing engine.
    """
    if n_clients < 1:
        raise DeploymentError(f"need at least one client, got {n_clients}")
    if cpus <= 0 or (server_cpus is not None and server_cpus <= 0):
        raise DeploymentError("cpus must be > 0")
    mem_limit = _mem_bytes(memory)
    server_mem = _mem_bytes(server_memory) if server_memory else None
    client = _docker_client()
    from docker.errors import APIError, ImageNotFound, NotFound  # type: ignore[import-untyped]

    for image in (f"{server_image}:{image_tag}", f"{client_image}:{image_tag}"):
        try:
            client.images.get(image)
        except ImageNotFound as err:
            raise DeploymentError(f"image {image} not found; build it with docker/bootstrap.sh") from err
    if any(n.name == network_name for n in client.networks.list(names=[network_name])):
        raise DeploymentError(f"docker network {network_name!r} already exists; remove it "
                              f"(docker network rm {network_name}) or pass another network_name")

    run_id = uuid.uuid4().hex[:8]
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="pollen-deploy-"))
    stage = Path(tempfile.mkdtemp(prefix=f"pollen-stage-{run_id}-"))
    labels = {"pollen.deploy": run_id}
    containers: list[Any] = []
    network = None
    start = time.monotonic()
    try:
        if certs_dir is None:
            bundle = generate_certs(stage / "bundle", [SERVER_ALIAS], n_clients)
        else:
            bundle = load_bundle(certs_dir, role="full")
            if SERVER_ALIAS not in bundle.hosts:
                raise DeploymentError(f"{certs_dir}'s server certificate is not valid for "
                                      f"{SERVER_ALIAS!r}; regenerate with --hosts {SERVER_ALIAS},...")
            if bundle.n_nodes < n_clients:
                raise DeploymentError(f"{certs_dir} has keys for {bundle.n_nodes} nodes, need {n_clients}")
        _stage_config(Path(config_path), stage / "config", n_clients, rounds)
        _give(stage / "config" / "run.toml", private=False)
        os.chmod(stage / "config", 0o755)
        data = out / "server"
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(data, IMAGE_UID, IMAGE_UID)
        user = None if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"

        network = client.networks.create(network_name, driver="bridge", labels=labels)
        # The server registers the clients' public keys; it never sees a node's private key.
        srv_certs = _stage_certs(bundle.dir, stage / "server-certs", [
            CA_CERT, SERVER_CERT, SERVER_KEY, *(f"node-{i}.pub" for i in range(n_clients))])
        (srv_certs / MANIFEST).write_text(json.dumps({"hosts": list(bundle.hosts),
                                                      "n_nodes": n_clients}))
        _give(srv_certs / MANIFEST, private=False)
        srv = client.containers.create(
            f"{server_image}:{image_tag}", name=f"pollen-server-{run_id}", labels=labels,
            # The Fleet API faces the bridge network; the Control API stays on the container's
            # loopback (port + 1) and no port is published to the host.
            command=["--config", "/config/run.toml", "--certs", "/certs", "--out", "/data/run",
                     "--host", "0.0.0.0", "--port", str(port), "--control-port", str(port + 1)],
            volumes={str(srv_certs): {"bind": "/certs", "mode": "ro"},
                     str(stage / "config"): {"bind": "/config", "mode": "ro"},
                     str(data): {"bind": "/data", "mode": "rw"}},
            nano_cpus=int(server_cpus * 1e9) if server_cpus else None, mem_limit=server_mem,
            user=user, detach=True, network=network_name,
            networking_config={network_name: client.api.create_endpoint_config(
                aliases=[SERVER_ALIAS])})
        containers.append(srv)
        srv.start()
        for i in range(n_clients):
            certs_i = _stage_certs(bundle.dir, stage / f"client-{i}-certs", [CA_CERT, f"node-{i}.key"])
            c = client.containers.create(
                f"{client_image}:{image_tag}", name=f"pollen-client-{i}-{run_id}", labels=labels,
                command=["--server", f"{SERVER_ALIAS}:{port}", "--certs", "/certs",
                         "--node-key", f"/certs/node-{i}.key", "--partition-id", str(i),
                         "--num-partitions", str(n_clients)],
                volumes={str(certs_i): {"bind": "/certs", "mode": "ro"}},
                nano_cpus=int(cpus * 1e9), mem_limit=mem_limit, user=user,
                network=network_name, detach=True)
            containers.append(c)
            c.start()

        try:
            status = srv.wait(timeout=timeout)
        except Exception as err:  # requests' ReadTimeout/ConnectionError: the server never finished
            raise DeploymentError(f"the server did not finish within {timeout:.0f} s; logs: "
                                  f"{out / 'logs'}") from err
        duration = time.monotonic() - start
        stats = {c.name: _container_stats(c) for c in containers[1:]}
        return _collect(containers, int(status.get("StatusCode", -1)), duration, stats, out)
    except APIError as err:
        raise DeploymentError(f"Docker refused: {err.explanation or err}") from err
    finally:
        if containers:
            with contextlib.suppress(Exception):  # logs are best effort; teardown is not
                _write_logs(containers, out / "logs")
        for c in containers:
            with contextlib.suppress(NotFound, APIError):
                c.remove(force=True, v=True)
        if network is not None:
            with contextlib.suppress(NotFound, APIError):
                network.remove()
        shutil.rmtree(stage, ignore_errors=True)  # private keys must not outlive the run
        client.close()


def _logs(c: Any) -> str:
    return c.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")


def _write_logs(containers: list[Any], log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    for c in containers:
        (log_dir / f"{c.name.rsplit('-', 1)[0]}.log").write_text(_logs(c))


def _collect(containers: list[Any], code: int, duration: float, stats: dict[str, dict[str, float]],
             out: Path) -> DeployResult:
    srv, clients = containers[0], containers[1:]
    codes: dict[str, int | None] = {}
    for c in clients:
        c.reload()
        codes[c.name] = c.attrs.get("State", {}).get("ExitCode") if c.status == "exited" else None
    return DeployResult(exit_code=code, duration_s=round(duration, 1), server_log=_logs(srv),
                        client_logs={c.name: _logs(c) for c in clients}, client_exit_codes=codes,
                        stats=stats, out_dir=out)
