"""The processes bench/slow_link.py starts, and every process they start, ended for sure.

`pollen server` runs its SuperLink in a session of its own, and the SuperLink's SuperExec and
ServerApp are its children: a signal to the server's process group does not reach them, and a
ServerApp still loading its model was seen to outlive everything else by minutes. So the tree under
each started process is sampled while it runs (`watch`), and whatever of it is left at the end is
killed by pid — only pids seen as descendants, with the start time they had then (no pid reuse).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from slow_link_net import shielded


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) from /proc, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may contain spaces or ')'
    return int(fields[1]), int(fields[19])


def descendants(roots: set[int]) -> dict[int, int]:
    """Every live process below `roots`: pid -> start time."""
    parent: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parent[int(entry)] = st
    found: dict[int, int] = {}
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _) in parent.items() if ppid in frontier and pid not in found}
        found.update({pid: parent[pid][1] for pid in frontier})
    return found


class Procs:
    """Every process started here runs in its own session, so its whole group can be signalled."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []
        self.seen: dict[int, int] = {}  # descendants ever observed: pid -> start time

    def start(self, argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
        with open(log, "ab") as fh:
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True, cwd=cwd)
        self.live.append(p)
        return p

    def watch(self) -> None:
        """Record the current process tree below everything started here."""
        self.seen.update(descendants({p.pid for p in self.live if p.poll() is None}))

    def wait(self, proc: subprocess.Popen, timeout: float, poll: float = 2.0) -> int | None:
        """proc's exit status, or None after `timeout` s; samples the tree meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch()
            try:
                return proc.wait(poll)
            except subprocess.TimeoutExpired:
                pass
        return None

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM each group, SIGKILL what stays, then SIGKILL any leftover descendant."""
        with shielded():
            self.watch()
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                for p in self.live:
                    if p.poll() is None:
                        try:
                            os.killpg(p.pid, sig)
                        except ProcessLookupError:
                            pass
                deadline = time.monotonic() + wait
                for p in self.live:
                    try:
                        p.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
            for pid, started in self.seen.items():
                st = _stat(pid)
                if st is not None and st[1] == started:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.live = [p for p in self.live if p.poll() is None]
            self.seen.clear()
