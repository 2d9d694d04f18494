"""Start/stop real Flower processes on loopback for the deployment tests (never leaves one behind)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pollen.deploy.node_auth import flower_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A process in its own session, so its SuperExec child dies with it."""

    popen: subprocess.Popen[bytes]
    log: Path
    children: list[Proc] = field(default_factory=list)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)  # group created by us (start_new_session)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # SuperExec grandchildren share the group; make sure none survive
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            pass


def start(cmd: list[str], log: Path, flwr_home: Path) -> Proc:
    fh = open(log, "wb")  # noqa: SIM115 - owned by the child
    try:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=flower_env(flwr_home),
                             cwd=flwr_home, start_new_session=True)
    finally:
        fh.close()
    return Proc(p, log)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and not proc.alive():
            raise AssertionError(f"process exited while waiting for {what}:\n{proc.text()[-3000:]}")
        time.sleep(0.2)
    tail = proc.text()[-3000:] if proc is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_to_exit(cmd: list[str], log: Path, flwr_home: Path, timeout: float) -> tuple[int, str]:
    """Run a process that is expected to give up by itself; kill it at `timeout`."""
    p = start(cmd, log, flwr_home)
    try:
        rc = p.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        rc = -1
    finally:
        p.stop()
    return rc, p.text()
