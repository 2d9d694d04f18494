"""`pollen client`: one Flower SuperNode that runs Pollen's ClientApp on this machine's data."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from pollen.errors import ConfigError
from pollen.launch import _exe, flower_env, free_port

# Flower's documented exit codes a user is most likely to meet.
EXIT_REASONS = {
    305: "the server refused this node: register its public key at the server (node authentication)",
}


def supernode_argv(*, server: str, partition_id: int, num_partitions: int, insecure: bool,
                   certs: str | None, node_key: str | None, max_wait: float | None) -> list[str]:
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"--partition-id must be in [0, {num_partitions}), got {partition_id}")
    if ":" not in server:
        raise ConfigError(f"--server must be HOST:PORT, got {server!r}")
    argv = [_exe("flower-supernode"), "--superlink", server,
            "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
            "--port", str(free_port())]
    if insecure:
        argv.append("--insecure")
    else:
        if certs is None:
            raise ConfigError("clients use TLS by default: pass --certs DIR (with ca.crt), "
                              "or --insecure against a loopback server")
        ca = Path(certs) / "ca.crt"
        if not ca.is_file():
            raise ConfigError(f"{ca} not found; copy the server's ca.crt from `pollen certs`")
        argv += ["--root-certificates", str(ca)]
    if node_key is not None:
        if not Path(node_key).is_file():
            raise ConfigError(f"node key {node_key} not found")
        argv += ["--auth-supernode-private-key", node_key]
    if max_wait is not None:
        argv += ["--max-wait-time", str(max_wait)]
    return argv


def _reachable(server: str) -> bool:
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


def _watchdog(proc: subprocess.Popen, server: str, max_wait: float, poll: float = 1.0) -> None:
    """Stop the SuperNode once the server has been unreachable for `max_wait` seconds.

    Flower 1.41's SuperNode logs "Giving up reconnection" after --max-wait-time but keeps running.
    """
    down_since: float | None = None
    while proc.poll() is None:
        if _reachable(server):
            down_since = None
        else:
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since >= max_wait:
                proc.terminate()
                return
        time.sleep(poll)


def run_client(*, server: str, partition_id: int, num_partitions: int, insecure: bool,
               certs: str | None, node_key: str | None, max_wait: float | None) -> int:
    argv = supernode_argv(server=server, partition_id=partition_id, num_partitions=num_partitions,
                          insecure=insecure, certs=certs, node_key=node_key, max_wait=max_wait)
    env = flower_env(Path(tempfile.mkdtemp(prefix="pollen-client-")))
    proc = subprocess.Popen(argv, env=env)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    if max_wait is not None:
        threading.Thread(target=_watchdog, args=(proc, server, max_wait), daemon=True).start()
    code = proc.wait()
    if code in EXIT_REASONS:
        print(f"error: {EXIT_REASONS[code]} (exit {code})")
    return code
