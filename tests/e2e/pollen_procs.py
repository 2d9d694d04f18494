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
