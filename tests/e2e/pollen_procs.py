"""`pollen server` / `pollen client` as real process groups on loopback, for the fault tests.

Each runs in its own session so a test can kill -9 a whole party (CLI, Flower process and the
app processes Flower spawns) the way a crash or a pulled plug would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def pollen(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "pollen.cli", *args], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def server(cfg: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    return pollen("server", "--config", str(cfg), "--insecure", "--port", str(port), *extra, log=log)


def client(port: int, pid: int, n: int, log: Path, max_wait: float = 5) -> subprocess.Popen:
    return pollen("client", "--server", f"127.0.0.1:{port}", "--partition-id", str(pid),
                  "--num-partitions", str(n), "--insecure", "--max-wait", str(max_wait), log=log)


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL the process group: no handler runs, nothing is cleaned up."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def wait_for(predicate: Any, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a process exited while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


class Federation:
    """One `pollen server` and three `pollen client`s on a config, each its own process group."""

    def __init__(self, cfg: Path, out: Path, logs: Path, name: str, clients: int = 3) -> None:
        from pollen.deploy.launch import free_port

        self.cfg, self.out, self.n = cfg, out, clients
        self.port = free_port()
        self.logs = {n: logs / f"{name}-{n}.log" for n in ("server", *(f"c{i}" for i in range(clients)))}
        self.server = server(self.cfg, self.port, self.logs["server"])
        self.clients: list = []

    def start_clients(self) -> None:
        from pollen.deploy.launch import wait_for_port

        wait_for_port("127.0.0.1", self.port, 120)
        # --max-wait long enough for the clients to ride out the server's restart.
        self.clients = [client(self.port, i, self.n, self.logs[f"c{i}"], max_wait=120)
                        for i in range(self.n)]

    def procs(self) -> list:
        return [self.server, *self.clients]

    def kill_all(self) -> None:
        for p in self.procs():
            if p.poll() is None:
                kill9(p)


def straight_and_resumed(straight: Federation, resumed: Federation,
                         at_kill: Callable[[dict], None] | None = None) -> list[dict]:
    """Run both side by side; kill -9 `resumed`'s server after round 1's checkpoint and restart it
    with --resume. `at_kill` sees the checkpoint's state.json. Returns the resumed run's rounds."""
    try:
        straight.start_clients()
        resumed.start_clients()
        ckpt = resumed.out / "checkpoint" / "state.json"
        wait_for(lambda: (read_json(ckpt) or {}).get("round", -1) >= 1, 600,
                 "round 1's checkpoint", resumed.procs())
        kill9(resumed.server)  # the whole server: CLI, SuperLink and ServerApp die together
        state = read_json(ckpt)
        assert state["round"] == 1
        if at_kill is not None:
            at_kill(state)
        resumed.server = server(resumed.cfg, resumed.port, resumed.logs["server"], "--resume")
        for fed in (straight, resumed):
            assert fed.server.wait(timeout=600) == 0, tail(fed.logs["server"])
    finally:
        straight.kill_all()
        resumed.kill_all()
    rounds = read_json(resumed.out / "metrics.json")["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    return rounds
