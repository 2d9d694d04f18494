"""Command lines for Flower 1.39's `flower-superlink` / `flower-supernode`, with the flags verified
against real processes in tests/deploy/test_tls_auth.py and tests/security/test_control_plane.py
(one place, so CLI and images agree).

Port layout (docs/deployment.md §5): the Fleet API, the only thing SuperNodes use, is gRPC-rere on
the public `--fleet-api-address`; the HTTP app that carries the Control API (run submission, node
registration, list, logs, stop) and the ServerAppIo API is bound to a loopback `--host:--port`
that no other machine can reach.

Flower's process exit status is 1 for every error; the Flower exit code (e.g. 305 for a refused
connection) is only printed as "Exit Code: N" in the log, hence `flower_exit_code`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pollen.deploy.certs import CA_CERT, SERVER_CERT, SERVER_KEY
from pollen.deploy.node_auth import flwr_executable
from pollen.errors import DeploymentError

SUPERNODE_CONNECTION_ERROR = 305  # Flower ExitCode.SUPERNODE_CONNECTION_ERROR
_EXIT_CODE = re.compile(r"Exit Code: (\d+)")


def flower_exit_code(log_text: str) -> int | None:
    """The last Flower exit code printed in a process log, or None if it printed none."""
    codes = _EXIT_CODE.findall(log_text)
    return int(codes[-1]) if codes else None


def is_loopback(host: str) -> bool:
    """True for names/addresses that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 literal in brackets as gRPC and `flwr` expect."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_control_host(host: str) -> None:
    """The Control API runs code on the server and every client: it never leaves loopback."""
    if not is_loopback(host):
        raise DeploymentError(f"the Control API must stay on loopback (got {host}); only the Fleet "
                              "API (--host/--port) is served to the network")


def _tls_files(certs: Path, names: tuple[str, ...]) -> list[Path]:
    paths = [Path(certs) / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DeploymentError(f"{certs} is missing {', '.join(missing)}; run `pollen certs --out {certs}`"
                              " or pass --insecure")
    return paths


def superlink_command(*, host: str = "0.0.0.0", port: int = 9092, control_port: int | None = None,
                      control_host: str = "127.0.0.1", certs: Path | None = None,
                      insecure: bool = False, node_auth: bool = True, database: Path | None = None,
                      health_address: str | None = None, simulation: bool = False) -> list[str]:
    """`flower-superlink` with the Fleet API (gRPC-rere) on `host:port` and the Control and
    ServerAppIo HTTP API on `control_host:control_port` (loopback only; default `port + 1`).

    A simulation SuperLink has no Fleet API at all; its Control API is on the loopback
    `control_port` (or `port` when `control_port` is not given). Runtime dependency installation
    is disabled: it would `uv sync` the app's dependencies (a multi-GB CUDA torch) into the image at
    run start. `database` keeps node registrations and runs across restarts (needed for resume).
    """
    check_control_host(control_host)
    if simulation:
        control_port = port if control_port is None else control_port
    else:
        control_port = port + 1 if control_port is None else control_port
        if control_port == port:
            raise DeploymentError(f"the Control API port must differ from the Fleet API port {port}")
    cmd = [flwr_executable("flower-superlink")]
    if insecure:
        if certs is not None:
            raise DeploymentError("--insecure conflicts with --certs; pass one or the other")
        if node_auth:
            raise DeploymentError("node authentication needs TLS; pass --certs DIR or disable node auth")
        cmd.append("--insecure")
    else:
        if certs is None:
            raise DeploymentError("TLS needs --certs DIR (from `pollen certs`) or pass --insecure")
        ca, crt, key = _tls_files(certs, (CA_CERT, SERVER_CERT, SERVER_KEY))
        cmd += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(crt), "--ssl-keyfile", str(key)]
        if node_auth:
            cmd.append("--enable-supernode-auth")
    if not simulation:  # always explicit: Flower's default Fleet address is 0.0.0.0:9092
        cmd += ["--fleet-api-type", "grpc-rere", "--fleet-api-address", host_port(host, port)]
    cmd += ["--host", control_host.strip("[]"), "--port", str(control_port),
            "--disable-runtime-dependency-installation"]
    if database is not None:
        cmd += ["--database", str(database)]
    if health_address:
        cmd += ["--health-server-address", health_address]
    if simulation:
        cmd.append("--simulation")
    return cmd


def supernode_command(*, superlink: str, partition_id: int, num_partitions: int,
                      certs: Path | None = None, insecure: bool = False,
                      node_key: Path | None = None, port: int = 9094,
                      health_address: str | None = None, max_retries: int | None = None,
                      max_wait_time: float | None = None,
                      extra_node_config: dict[str, str | int | float] | None = None) -> list[str]:
    """`flower-supernode` dialling the gRPC-rere Fleet API at `superlink` (host:port). `port` is
    the node's own Runtime API (loopback), so several nodes on one host need distinct ports."""
    if not 0 <= partition_id < num_partitions:
        raise DeploymentError(f"--partition-id must be in [0, {num_partitions}), got {partition_id}")
    cmd = [flwr_executable("flower-supernode")]
    if insecure:
        if certs is not None or node_key is not None:
            raise DeploymentError("--insecure conflicts with --certs/--node-key (node auth needs TLS)")
        cmd.append("--insecure")
    else:
        if certs is None:
            raise DeploymentError("TLS needs --certs DIR holding ca.crt, or pass --insecure")
        (ca,) = _tls_files(certs, (CA_CERT,))
        cmd += ["--root-certificates", str(ca)]
        if node_key is not None:
            if not Path(node_key).is_file():
                raise DeploymentError(f"node key {node_key} does not exist")
            cmd += ["--auth-supernode-private-key", str(node_key)]
    config = {"partition-id": partition_id, "num-partitions": num_partitions,
              **(extra_node_config or {})}
    parts = [f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]
    # The node's Runtime API (its ClientApps pull work from it) stays on loopback, explicitly.
    cmd += ["--grpc-rere", "--superlink", superlink, "--host", "127.0.0.1", "--port", str(port),
            "--node-config", " ".join(parts)]
    if health_address:
        cmd += ["--health-server-address", health_address]
    if max_retries is not None:
        cmd += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(max_wait_time)]
    return cmd
