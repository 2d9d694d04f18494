"""Issue 10, item 1: only node traffic is reachable from the network.

A real `pollen server` (TLS + node authentication, Fleet API on 0.0.0.0) waits for its clients. An
outsider who holds only the public `ca.crt` and can reach the server's public port tries every
control operation a Flower CLI has: list runs, read the run's logs, stop it, submit an app of its
own, register a node key of its own; then the same over raw gRPC (Control service, Fleet
RegisterNode), and a SuperNode with an unregistered key. Every attempt is refused, and the
operator's loopback view afterwards shows the same single run, still running, and only the
registered nodes. The kernel's socket table shows why: the server's processes listen on exactly
one non-loopback socket, the Fleet API; the Control API port is bound to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from flwr.proto.control_pb2 import ListRunsRequest
from flwr.proto.control_pb2_grpc import ControlStub
from flwr.proto.fleet_pb2 import RegisterNodeFleetRequest
from flwr.proto.fleet_pb2_grpc import FleetStub

from pollen.deploy.certs import generate_certs
from pollen.deploy.commands import SUPERNODE_CONNECTION_ERROR, flower_exit_code, supernode_command
from pollen.deploy.launch import free_port
from pollen.deploy.node_auth import flower_env, flwr_executable, write_connection
from tests.e2e.tiny import tiny_config

pytestmark = pytest.mark.slow

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}


# --- the kernel's view -----------------------------------------------------------------------------
def _addr(hex_addr: str) -> str:
    """An address of /proc/net/tcp{,6} (32-bit words in host byte order) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)


def listening() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket on this machine: inode -> (address, port)."""
    out: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == LISTEN:
                host, port = f[1].split(":")
                out[int(f[9])] = (_addr(host), int(port, 16))
    return out


def descendants(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def sockets_of(pids: set[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")


def outward_ip() -> str | None:
    """A non-loopback address of this machine (no packet is sent), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if is_loopback(ip) else ip


def connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


# --- the parties -----------------------------------------------------------------------------------
def flwr(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([flwr_executable(), *args], env=flower_env(home), cwd=home,
                          capture_output=True, text=True, timeout=timeout, check=False)


def flwr_json(home: Path, *args: str) -> dict[str, Any]:
    proc = flwr(home, *args, "--format", "json")
    try:
        return json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        return {"success": False, "error-message": (proc.stdout + proc.stderr)[-800:]}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    fleet: int
    control: int
    out: Path
    certs: Path
    operator: Path  # the FLWR_HOME `pollen server` wrote, with its loopback connection "pollen"
    log: Path

    def runs(self) -> list[dict[str, Any]]:
        res = flwr_json(self.operator, "ls", "pollen")
        assert res.get("success"), res
        return list(res["runs"])

    def nodes(self) -> set[tuple[str, str]]:
        """(node id, status) of every node the SuperLink knows."""
        res = flwr_json(self.operator, "supernode", "list", "pollen")
        assert res.get("success"), res
        return {(str(n["node-id"]), str(n["status"])) for n in res["nodes"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ctl")
    certs = generate_certs(root / "certs", ["127.0.0.1", "localhost"], 2).dir
    cfg = tiny_config(root, rounds=1, clients=2)
    fleet, control = free_port(), free_port()
    log = root / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pollen.cli", "server", "--config", str(cfg), "--certs",
             str(certs), "--host", "0.0.0.0", "--port", str(fleet), "--control-port", str(control)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(proc, fleet, control, root / "out", certs, root / "out" / ".flwr-home", log)
    try:
        deadline = time.monotonic() + 300
        while True:  # the run is submitted once the nodes are registered
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            if (srv.operator / "config.toml").is_file() and connects("127.0.0.1", control):
                res = flwr_json(srv.operator, "ls", "pollen")
                if res.get("success") and res.get("runs"):
                    break
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_only_the_fleet_api_listens_beyond_loopback(server: Server) -> None:
    table = listening()
    mine = {table[i] for i in sockets_of(descendants(server.proc.pid)) if i in table}
    public = {(a, p) for a, p in mine if not is_loopback(a)}
    # gRPC binds 0.0.0.0 as the dual-stack wildcard [::] where IPv6 is available.
    assert {p for _, p in public} == {server.fleet}, mine
    assert {a for a, _ in public} <= {"0.0.0.0", "::"}, mine
    assert {a for a, p in table.values() if p == server.control} == {"127.0.0.1"}, table
    ip = outward_ip()
    if ip is not None:  # dialled through a real interface, as another machine would
        assert connects(ip, server.fleet)
        assert not connects(ip, server.control)


def test_outsider_with_ca_cert_is_refused_every_control_operation(server: Server,
                                                                  tmp_path: Path) -> None:
    (run,) = server.runs()
    nodes_before = server.nodes()
    assert len(nodes_before) == 2
    run_id = str(run["run-id"])
    # The outsider: the public CA, its own node key, a copy of an app, the server's public port.
    home = tmp_path / "outsider"
    write_connection(home, f"127.0.0.1:{server.fleet}", root_cert=server.certs / "ca.crt",
                     insecure=False, name="public")
    own = generate_certs(tmp_path / "own", ["127.0.0.1"], 1)
    app = tmp_path / "app"
    shutil.copytree(server.out / ".flwr-app", app)
    attempts = {
        "list runs": lambda: flwr_json(home, "ls", "public"),
        "stop": lambda: flwr_json(home, "stop", run_id, "public"),
        "submit": lambda: flwr_json(home, "run", str(app), "public"),
        "register": lambda: flwr_json(home, "supernode", "register", str(own.node_pubs[0]),
                                      "public"),
        "nodes": lambda: flwr_json(home, "supernode", "list", "public"),
        "logs": lambda: flwr(home, "log", run_id, "public", "--show"),
    }
    with ThreadPoolExecutor(len(attempts)) as pool:
        futures = {name: pool.submit(fn) for name, fn in attempts.items()}
        results = {name: f.result() for name, f in futures.items()}
    for name, res in results.items():
        if isinstance(res, dict):
            assert res.get("success") is False, (name, res)
            assert "unavailable" in res["error-message"], (name, res)
        else:  # `flwr log` has no JSON mode
            assert res.returncode != 0 and "unavailable" in res.stderr, (name, res)
            assert "Pollen" not in res.stdout  # nothing of the run's log leaked
    # Nothing changed: one run, still going (it may have moved on from "starting" to "running" by
    # itself meanwhile); only the operator's two nodes.
    (after,) = server.runs()
    assert after["run-id"] == run["run-id"], (run, after)
    assert str(after["status"]) in ("starting", "running"), (run, after)
    assert server.nodes() == nodes_before


def test_control_service_and_self_registration_refused_over_grpc(server: Server,
                                                                 tmp_path: Path) -> None:
    creds = grpc.ssl_channel_credentials((server.certs / "ca.crt").read_bytes())
    own = generate_certs(tmp_path / "own", ["127.0.0.1"], 1)
    with grpc.secure_channel(f"127.0.0.1:{server.fleet}", creds) as channel:
        with pytest.raises(grpc.RpcError) as ctl:
            ControlStub(channel).ListRuns(ListRunsRequest(), timeout=10)
        assert ctl.value.code() == grpc.StatusCode.UNIMPLEMENTED  # no Control service here
        with pytest.raises(grpc.RpcError) as reg:
            FleetStub(channel).RegisterNode(
                RegisterNodeFleetRequest(public_key=own.node_pubs[0].read_bytes()), timeout=10)
        assert reg.value.code() != grpc.StatusCode.OK
    assert len(server.nodes()) == 2


def test_unregistered_node_key_cannot_join(server: Server, tmp_path: Path) -> None:
    own = generate_certs(tmp_path / "own", ["127.0.0.1"], 1)
    cmd = supernode_command(superlink=f"127.0.0.1:{server.fleet}", partition_id=0,
                            num_partitions=2, certs=server.certs, node_key=own.node_keys[0],
                            port=free_port(), max_retries=1)
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as fh:  # a file, not a pipe: the SuperExec child would hold a pipe open
        proc = subprocess.Popen(cmd, env=flower_env(tmp_path / "node"), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test created
        proc.wait(10)
    log = log_path.read_text(errors="replace")
    assert code != 0 and flower_exit_code(log) == SUPERNODE_CONNECTION_ERROR, log[-2000:]
    assert {status for _, status in server.nodes()} == {"registered"}  # nobody joined
