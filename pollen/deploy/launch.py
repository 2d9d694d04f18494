"""Start Flower's own processes for a Pollen run: SuperLink, the `flwr run` submission, SuperNodes.

Pollen never re-implements Flower's runtime: it writes its fixed app bundle (`pollen.deploy.app_bundle`:
one pyproject naming `pollen.server.app:app` / `pollen.client.app:app`, the same bytes for every
run so clients can pin its hash) and the run's config file, starts a SuperLink, and submits both
with `flwr run APP --run-config OUT/.flwr-run-config.toml`.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pollen.config import PollenConfig
from pollen.deploy.app_bundle import APP_DIR, RUN_CONFIG_FILE, write_bundle, write_run_config
from pollen.deploy.commands import host_port, superlink_command
from pollen.deploy.node_auth import flower_env as _flower_env
from pollen.deploy.node_auth import flwr_executable
from pollen.deploy.reaper import guarded
from pollen.errors import DeploymentError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise DeploymentError(f"{proc.name} exited with code {proc.popen.returncode} before "
                                  f"{host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise DeploymentError(f"nothing answered on {host}:{port} within {timeout:.0f} s")


# Ray (the simulation backend) binds its GCS, raylet, object manager and workers to the machine's
# routable address on all interfaces, unauthenticated. With "clusters" off, Ray is single-machine
# and every one of them binds 127.0.0.1 (ray._private.services.get_node_ip_address; the C++
# servers listen on loopback only when the node address is 127.0.0.1). Flower 1.42's federation
# config cannot carry ray.init(_node_ip_address=...), and Ray rewrites that 127.0.0.1 to the
# routable address anyway unless this switch is off. Measured in tests/security/test_failures.py.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Flower's process environment plus Pollen's: offline hub, quiet tokenizers, unbuffered logs,
    and a Ray that is local to this machine (loopback only; never an existing cluster)."""
    env = _flower_env(flwr_home)
    env.update({
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "PYTHONUNBUFFERED": "1",
        "RAY_DEDUP_LOGS": "0",
        **RAY_LOOPBACK_ENV,
    })
    env.pop("RAY_ADDRESS", None)
    return env


def write_app(cfg: PollenConfig, out: Path, *, resume: bool = False) -> Path:
    """Pollen's fixed app bundle in OUT/.flwr-app, and this run's values in OUT/.flwr-run-config.toml.

    The bundle is the same for every run (its hash is what `pollen client` trusts); the run config
    carries the whole resolved Pollen config, the output directory and the resume flag.
    """
    app = write_bundle(out / APP_DIR)
    write_run_config(run_config_path(out), config_json=cfg.to_json(), out=out, resume=resume)
    return app


def run_config_path(out: Path) -> Path:
    return out / RUN_CONFIG_FILE


@dataclass
class Proc:
    """A child process with its log file; stopped politely, then firmly.

    On Linux `popen` is the `pollen.deploy.reaper` guard around the command: it passes signals on, takes
    every process the command started down with it, and exits with the command's status.
    """

    name: str
    popen: subprocess.Popen
    log: Path
    _fh: object = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.terminate()  # a second SIGTERM: the guard SIGKILLs everything at once
                try:
                    self.popen.wait(3)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(5)
        # Without a guard (not Linux), or after a SIGKILL of the guard: what stayed in the group.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._fh is not None:
            self._fh.close()  # type: ignore[attr-defined]
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Proc:
    """Start argv in its own session (a Ctrl-C reaches Pollen, which stops it politely), under
    `pollen.deploy.reaper`'s guard: when it ends, or when Pollen dies however it dies, every process it
    started ends too."""
    if shutil.which(argv[0], path=env.get("PATH")) is None:  # as Popen would, before any guard runs
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    popen = subprocess.Popen(guarded(argv), stdout=fh, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    return Proc(name=name, popen=popen, log=log, _fh=fh)


@dataclass
class Superlink:
    """A running SuperLink: where nodes reach it (None in simulation) and where Pollen controls it."""

    proc: Proc
    fleet_port: int | None
    control_host: str
    control_port: int

    @property
    def control_address(self) -> str:
        return host_port(self.control_host, self.control_port)


def start_superlink(out: Path, env: dict[str, str], *, simulation: bool, host: str = "127.0.0.1",
                    port: int | None = None, control_host: str = "127.0.0.1",
                    control_port: int | None = None, certs: Path | None = None,
                    node_auth: bool = False, health_address: str | None = None) -> Superlink:
    """Flower 1.39: the Fleet API (gRPC-rere) on the public `host:port`, the Control and ServerAppIo
    HTTP API on loopback `control_host:control_port` (default `port + 1`). A simulation SuperLink
    has no Fleet API; its Control API takes a free loopback port unless one is given."""
    if simulation:
        fleet_port = None
        control_port = control_port or free_port(control_host.strip("[]"))
    else:
        fleet_port = port or free_port(host.strip("[]"))
        control_port = control_port or (fleet_port + 1 if port else free_port(control_host.strip("[]")))
    argv = superlink_command(host=host, port=fleet_port or control_port, control_port=control_port,
                             control_host=control_host, certs=certs, insecure=certs is None,
                             node_auth=node_auth, health_address=health_address,
                             simulation=simulation)
    proc = spawn("superlink", argv, out / "logs" / "superlink.log", env)
    try:
        wait_for_port(control_host.strip("[]"), control_port, 60, proc)
        if fleet_port is not None:
            probe = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host.strip("[]") == "::"
                                                                   else host.strip("[]"))
            wait_for_port(probe, fleet_port, 30, proc)
    except DeploymentError as e:
        proc.stop()
        raise DeploymentError(f"SuperLink did not start: {e}\n{proc.tail()}") from None
    return Superlink(proc, fleet_port, control_host.strip("[]"), control_port)


def submit_run(app: Path, out: Path, env: dict[str, str], connection: str,
               federation_config: dict[str, object] | None = None,
               run_config: Path | None = None) -> Proc:
    """`flwr run APP CONNECTION`; `run_config` defaults to the file `write_app` wrote, if any."""
    argv = [flwr_executable("flwr"), "run", str(app), connection, "--stream"]
    run_config = run_config or run_config_path(out)
    if run_config.is_file():
        argv += ["--run-config", str(run_config.resolve())]
    if federation_config:
        argv += ["--federation-config",
                 " ".join(f"{k}={_toml_value(v)}" for k, v in federation_config.items())]
    return spawn("flwr-run", argv, out / "logs" / "run.log", env)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)
